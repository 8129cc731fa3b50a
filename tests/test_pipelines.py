import json

import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import TEST_DATA, run_kedro


def test_registry_lists_every_pipeline(monkeypatch):
    from kedro.framework.project import configure_project, pipelines

    from conftest import PROJECT_ROOT
    from fkr_kedro.run_config import set_active_config_loader

    monkeypatch.chdir(PROJECT_ROOT)
    set_active_config_loader(None)  # read ./conf, as `kedro registry list` does
    configure_project("fkr_kedro")
    for name in ("data_prep", "train", "quantize", "evaluate", "__default__"):
        assert name in pipelines
    default_nodes = {n.name for n in pipelines["__default__"].nodes}
    assert {"generate_synthetic_world", "train_model", "gptq_w4_g32.quantize", "tabulate_variants"} <= default_nodes
    # One namespace per variant of conf/base/parameters_quantize.yml.
    namespaces = {n.namespace for n in pipelines["quantize"].nodes}
    assert {"fp", "bnb_int8", "bnb_nf4", "bnb_fp4", "awq_w4_g32", "rtn_w2_g32"} <= namespaces


@pytest.mark.slow
def test_the_test_study_trains_quantizes_and_evaluates(tracked_study):
    """On the outputs of the one `kedro run --env=test` of the suite (tests/tracked_study.py)."""
    kedro_project = tracked_study.project
    model_dir = kedro_project / TEST_DATA / "06_models/base"
    assert (model_dir / "model.safetensors").exists() and (model_dir / "config.json").exists()
    assert not list(model_dir.glob("*.bin")) and not list(model_dir.glob("*.pkl"))
    # The saved directory loads like any hub model.
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.config.model_type == "llama"
    with torch.no_grad():
        logits = model(**tok(["The birth city of"], return_tensors="pt")).logits
    assert logits.shape[-1] == len(tok)

    metrics = json.loads((kedro_project / TEST_DATA / "08_reporting/training_metrics.json").read_text())
    for key in ("one_hop.accuracy", "two_hop.seen.accuracy", "two_hop.held_out.accuracy",
                "two_hop.held_out.chance", "knowledge_bits_per_parameter"):
        assert key in metrics
    # 300 steps on the tiny world learn something: the model beats the best constant guess
    # on the one-hop facts it was trained on (20 cities, 10 companies: chance <= 1/6).
    assert metrics["one_hop.accuracy"] > 0.3
    # The threads that trained it are recorded: runtime.threads auto gives training the free
    # cores, capped by OMP_NUM_THREADS (scripts/test.sh sets 1 unless told otherwise).
    assert 1 <= metrics["train.torch_threads"] <= torch.get_num_threads()

    # Every variant of the test configuration was quantized and evaluated.
    table = pd.read_csv(kedro_project / TEST_DATA / "08_reporting/recall_by_variant.csv")
    headline = table[table["relation"].isna()].pivot(index="variant", columns="metric", values="value")
    assert set(headline.index) == {"fp", "bnb_int8", "bnb_nf4", "gptq_w4_g32", "rtn_w2_g32"}
    relations = table.dropna(subset=["relation"])
    assert set(relations["relation"]) == set(metrics_relations(metrics))
    fp = headline.loc["fp"]
    # 8-bit stays near full precision; 2-bit round-to-nearest loses probability mass.
    assert abs(headline.loc["bnb_int8", "one_hop.accuracy"] - fp["one_hop.accuracy"]) <= 0.02
    assert headline.loc["rtn_w2_g32", "one_hop.answer_logprob"] < fp["one_hop.answer_logprob"] - 0.1
    assert headline.loc["gptq_w4_g32", "effective_bits"] == pytest.approx(4 + 20 / 32, abs=0.5)
    assert fp["effective_bits"] == 32

    # A second quantize run keeps the variants already on disk.
    weights = kedro_project / TEST_DATA / "06_models/variants/gptq_w4_g32/model.safetensors"
    before = weights.stat().st_mtime_ns
    run_kedro(kedro_project, pipeline="quantize")
    assert weights.stat().st_mtime_ns == before


def metrics_relations(metrics: dict) -> list[str]:
    return [k.removeprefix("one_hop.accuracy.") for k in metrics if k.startswith("one_hop.accuracy.") and not k.endswith("_stderr")]


def test_a_bad_variant_stops_the_run_before_anything_loads(kedro_project):
    from fkr_kedro.quantization.variants import VariantError

    with pytest.raises(VariantError, match=r"variant 'bnb_w3'.*does not support 3-bit.*use bits in \[4\]"):
        # the default pipeline, data_prep first; --params adds a variant to the configured ones
        run_kedro(kedro_project, params={"variants": {"bnb_w3": {"method": "bnb_nf4", "bits": 3}}})
    assert not (kedro_project / TEST_DATA / "05_model_input/one_hop_prompts.parquet").exists()
