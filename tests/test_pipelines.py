import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import run_kedro


def test_registry_lists_every_pipeline():
    from kedro.framework.project import configure_project, pipelines

    configure_project("fkr_kedro")
    for name in ("data_prep", "train", "__default__"):
        assert name in pipelines
    default_nodes = {n.name for n in pipelines["__default__"].nodes}
    assert {"generate_synthetic_world", "train_model"} <= default_nodes


@pytest.mark.slow
def test_data_prep_and_train_run_end_to_end(kedro_project):
    run_kedro(kedro_project, pipeline="data_prep")
    run_kedro(kedro_project, pipeline="train")

    model_dir = kedro_project / "data/06_models/base"
    assert (model_dir / "model.safetensors").exists() and (model_dir / "config.json").exists()
    assert not list(model_dir.glob("*.bin")) and not list(model_dir.glob("*.pkl"))
    # The saved directory loads like any hub model.
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.config.model_type == "llama"
    with torch.no_grad():
        logits = model(**tok(["The birth city of"], return_tensors="pt")).logits
    assert logits.shape[-1] == len(tok)

    metrics = json.loads((kedro_project / "data/08_reporting/training_metrics.json").read_text())
    for key in ("one_hop.accuracy", "two_hop.seen.accuracy", "two_hop.held_out.accuracy",
                "two_hop.held_out.chance", "knowledge_bits_per_parameter"):
        assert key in metrics
    # 150 steps on the tiny world learn something: the model beats the best constant guess
    # on the one-hop facts it was trained on (20 cities, 10 companies: chance <= 1/6).
    assert metrics["one_hop.accuracy"] > 0.2


def test_training_is_deterministic():
    from fkr_kedro.modeling.tokenizer import build_word_tokenizer
    from fkr_kedro.modeling.train import ModelShape, TrainConfig, train_causal_lm

    corpus = ["The birth city of Ana Bo is Port Ca", "Ana Bo was born in Port Ca", "The employer of Ana Bo is Ru Labs"]
    tok = build_word_tokenizer(corpus)
    shape = ModelShape(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    config = TrainConfig(steps=20, batch_size=4, warmup_steps=2, log_every=5)
    a, hist_a = train_causal_lm(corpus, tok, shape, config, progress=False)
    b, hist_b = train_causal_lm(corpus, tok, shape, config, progress=False)
    assert hist_a == [{**h, "seconds": hist_a[i]["seconds"]} for i, h in enumerate(hist_b)]
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert hist_a[-1]["loss"] < hist_a[0]["loss"]
