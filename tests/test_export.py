"""The lm-evaluation-harness export: the task folder lm-eval loads, and lm-eval's accuracy on
it equal to the project's own evaluation of the same model on the same prompts (run
in-process on a tiny trained Llama, on the CPU)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from fkr_kedro.analysis.lm_eval_export import lm_eval_task_files, write_task_folder
from fkr_kedro.analysis.recall import measure_recall
from fkr_kedro.modeling.load import CausalLM, load_causal_lm
from fkr_kedro.modeling.tokenizer import build_word_tokenizer
from fkr_kedro.modeling.train import ModelShape, TrainConfig, train_causal_lm
from conftest import TEST_DATA

MAX_NEW_TOKENS = 4


@pytest.fixture(scope="module")
def study(tiny_world, tmp_path_factory):
    """A tiny model trained briefly on the tiny world (so it recalls some facts, not all),
    the prompt tables, the project's evaluation and the exported task folder."""
    corpus = tiny_world.corpus()
    one_hop, two_hop = tiny_world.one_hop_table(), tiny_world.two_hop_table()
    tokenizer = build_word_tokenizer(corpus + one_hop["prompt"].tolist() + two_hop["prompt_two_hop"].tolist())
    torch.manual_seed(0)
    shape = ModelShape(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, max_position_embeddings=48)
    model, _ = train_causal_lm(corpus, tokenizer, shape, TrainConfig(steps=120, batch_size=32, learning_rate=1e-2,
                                                                      warmup_steps=10), progress=False)
    model_dir = tmp_path_factory.mktemp("model")
    CausalLM(model, tokenizer).save(model_dir)
    lm = load_causal_lm(model_dir, device="cpu")
    ours = measure_recall(lm.model, lm.tokenizer, one_hop, two_hop, batch_size=64, max_new_tokens=MAX_NEW_TOKENS)
    folder = write_task_folder(
        lm_eval_task_files(one_hop, two_hop, "tiny", MAX_NEW_TOKENS), tmp_path_factory.mktemp("export") / "tasks"
    )
    return model_dir, one_hop, two_hop, ours, folder


def test_folder_holds_data_tasks_and_rule(study):
    _, one_hop, two_hop, _, folder = study
    assert sorted(p.name for p in folder.iterdir()) == sorted([
        "tiny.yaml", "tiny_one_hop.jsonl", "tiny_two_hop.jsonl", "tiny_one_hop_gen.yaml", "tiny_one_hop_loglik.yaml",
        "tiny_two_hop_gen.yaml", "tiny_two_hop_loglik.yaml", "utils.py",
    ])  # fmt: skip
    rows = [json.loads(line) for line in (folder / "tiny_two_hop.jsonl").read_text().splitlines()]
    assert len(rows) == len(two_hop)
    assert rows[0]["prompt"] == two_hop["prompt_two_hop"].iloc[0] and rows[0]["object"] == two_hop["e3"].iloc[0]
    assert len((folder / "tiny_one_hop.jsonl").read_text().splitlines()) == len(one_hop)
    gen = (folder / "tiny_one_hop_gen.yaml").read_text()
    assert "process_results: !function utils.process_results" in gen
    config = yaml.safe_load(gen.replace("!function ", ""))
    assert config["output_type"] == "generate_until"
    assert config["generation_kwargs"] == {"until": [], "do_sample": False, "max_gen_toks": MAX_NEW_TOKENS}
    # utils.py is the project's rule, standalone: the same verdicts as recall.is_whole_name_match.
    namespace: dict = {"__file__": str(folder / "utils.py")}
    exec((folder / "utils.py").read_text(), namespace)
    doc = {"aliases": ["United States", "USA"]}
    assert namespace["process_results"](doc, ["the United States. It"]) == {"exact_match": 1.0}
    assert namespace["process_results"](doc, ["usa!"]) == {"exact_match": 1.0}
    assert namespace["process_results"](doc, ["United Statesman"]) == {"exact_match": 0.0}


def test_bad_export_name_fails(study):
    _, one_hop, two_hop, _, _ = study
    with pytest.raises(ValueError, match="export name 'tiny facts'"):
        lm_eval_task_files(one_hop, two_hop, "tiny facts", 4)


def test_lm_eval_agrees_with_the_project(study):
    """lm-eval in-process (its HF model class on the same directory, greedy, batch 64) on the
    exported tasks: generation accuracy equal to the project's recall, prompt by prompt;
    log-likelihoods equal to the project's answer_logprob."""
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    model_dir, _, _, ours, folder = study
    one_acc = float(ours.one_hop["correct"].mean())
    composed = ours.two_hop[ours.two_hop["readout"] == "r2(r1(e1))"].reset_index(drop=True)
    two_acc = float(composed["correct"].mean())
    assert 0 < one_acc < 1, "the tiny model should recall some facts but not all"
    results = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(model_dir), "device": "cpu", "dtype": "float32"},
        tasks=["tiny"],
        task_manager=TaskManager(include_path=str(folder)),
        batch_size=64,
        log_samples=True,
    )
    res = results["results"]
    assert res["tiny_one_hop_gen"]["exact_match,none"] == pytest.approx(one_acc, abs=1e-12)
    assert res["tiny_two_hop_gen"]["exact_match,none"] == pytest.approx(two_acc, abs=1e-12)
    samples = sorted(results["samples"]["tiny_one_hop_gen"], key=lambda s: s["doc_id"])
    assert [s["exact_match"] for s in samples] == ours.one_hop["correct"].astype(float).tolist()
    # Log-likelihoods: the mean is -log(perplexity); per prompt the project's answer_logprob.
    for task, scores in (("tiny_one_hop_loglik", ours.one_hop), ("tiny_two_hop_loglik", composed)):
        mean_logprob = -math.log(res[task]["perplexity,none"])
        assert mean_logprob == pytest.approx(scores["answer_logprob"].mean(), rel=1e-4, abs=1e-4)
        lls = [s["resps"][0][0][0] for s in sorted(results["samples"][task], key=lambda s: s["doc_id"])]
        assert lls == pytest.approx(scores["answer_logprob"].tolist(), rel=1e-4, abs=1e-4)
        assert 0 <= res[task]["acc,none"] <= 1


@pytest.mark.slow
def test_kedro_export_pipeline_writes_the_task_folder(kedro_project):
    """`kedro run --pipelines=data_prep,export` on the test configuration: the folder of the
    knowledge source (synthetic), named after it, with the evaluation's prompt counts; the
    export is not part of the default pipeline."""
    from conftest import run_kedro

    from fkr_kedro.pipeline_registry import register_pipelines

    run_kedro(kedro_project, pipeline="data_prep")
    run_kedro(kedro_project, pipeline="export", params={"evaluate": {"batch_size": 256, "max_new_tokens": 5}})
    import pandas as pd

    folder = kedro_project / TEST_DATA / "08_reporting" / "lm_eval_tasks"
    one_hop = pd.read_parquet(kedro_project / TEST_DATA / "05_model_input" / "one_hop_prompts.parquet")
    assert len((folder / "synthetic_one_hop.jsonl").read_text().splitlines()) == len(one_hop)
    gen = yaml.safe_load((folder / "synthetic_two_hop_gen.yaml").read_text().replace("!function ", ""))
    assert gen["generation_kwargs"]["max_gen_toks"] == 5
    assert "export_lm_eval" not in {n.name for n in register_pipelines()["__default__"].nodes}
