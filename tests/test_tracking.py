"""MLflow tracking of `kedro run` against a real MLflow server (tests/tracked_study.py)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from fkr_kedro.tracking import flat_numbers, layer_histories, metric_key
from tracked_study import kedro

VARIANTS = {"fp", "bnb_int8", "bnb_nf4", "gptq_w4_g32", "rtn_w2_g32"}


def _runs(client: MlflowClient, run_name: str | None = None):
    experiment = client.get_experiment_by_name("fkr_kedro")
    assert experiment is not None, "no experiment fkr_kedro on the server"
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    return [r for r in runs if run_name is None or r.info.run_name == run_name]


def _family(client: MlflowClient, parent_name: str):
    """The most recent parent run of that name and its nested runs, by variant."""
    parents = [r for r in _runs(client, parent_name) if "mlflow.parentRunId" not in r.data.tags]
    assert parents, f"no pipeline run named {parent_name!r}"
    parent = max(parents, key=lambda r: r.info.start_time)
    children = {
        r.info.run_name: r for r in _runs(client) if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    return parent, children


@pytest.mark.slow
def test_one_pipeline_run_with_a_nested_run_per_variant(tracked_study):
    client = MlflowClient(tracked_study.tracking_uri)
    parents = [r for r in _runs(client, "__default__") if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, "one `kedro run` makes one pipeline run"
    parent, children = _family(client, "__default__")
    assert parent.info.status == "FINISHED"
    assert set(children) == VARIANTS
    assert {r.info.status for r in children.values()} == {"FINISHED"}

    # The params that Compare lines up, with the values of conf/test/parameters.yml.
    gptq = children["gptq_w4_g32"].data.params
    assert {k: gptq[k] for k in ("method", "bits", "group_size", "calibration_size")} == {
        "method": "gptq", "bits": "4", "group_size": "32", "calibration_size": "32",
    }
    assert children["rtn_w2_g32"].data.params["calibration_size"] == "None"  # RTN takes no calibration
    assert children["bnb_nf4"].data.params["method"] == "bnb_nf4"
    for run in children.values():
        assert run.data.params["model"] == "llama trained from scratch (2 layers, width 64)"
        assert run.data.params["dataset"] == "synthetic world (seed 0, 200 people)"

    # Each variant's metrics are the numbers the evaluate pipeline wrote for it.
    for variant, run in children.items():
        folder = tracked_study.project / "data/07_model_output" / variant
        for name in ("recall_metrics.json", "footprint.json"):
            expected = flat_numbers(json.loads((folder / name).read_text()))
            assert {k: run.data.metrics[k] for k in expected} == pytest.approx(expected), (variant, name)
    assert "two_hop.seen.r2_r1_e1.accuracy" in children["fp"].data.metrics  # "r2(r1(e1))" made valid

    # Unnamespaced *_metrics datasets are metrics of the pipeline run.
    training = flat_numbers(json.loads((tracked_study.project / "data/08_reporting/training_metrics.json").read_text()))
    assert {k: parent.data.metrics[k] for k in training} == pytest.approx(training)
    # kedro-mlflow logged the parameters on the same run.
    assert parent.data.params["training.steps"] == "300"


@pytest.mark.slow
def test_per_layer_curves_are_metric_histories_with_step_layer(tracked_study):
    client = MlflowClient(tracked_study.tracking_uri)
    _, children = _family(client, "__default__")
    reporting = tracked_study.project / "data/08_reporting"
    probes = pd.read_csv(reporting / "probe_results.csv")
    expected = probes[(probes["variant"] == "rtn_w2_g32") & (probes["probe"] == "answer")
                      & (probes["metric"] == "transfer_accuracy")].sort_values("layer")
    history = client.get_metric_history(children["rtn_w2_g32"].info.run_id, "probe.answer.transfer_accuracy")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [0, 1, 2]  # embeddings + 2 layers
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(expected["value"].tolist())

    run_id = children["gptq_w4_g32"].info.run_id
    steps = {
        "entrec.all.entrec_mean": [0, 1, 2],
        "drift.two_hop.resid_post.mention.cka": [0, 1, 2],
        "attribution.top_neurons_retained": [0, 1],  # decoder layers
        "cnst.all.cnst_score": [2],  # output distributions: the last layer
    }
    for key, layers in steps.items():
        assert sorted(m.step for m in client.get_metric_history(run_id, key)) == layers, key
    assert "probe.answer.n_train" not in children["fp"].data.metrics  # counts are not curves


@pytest.mark.slow
def test_report_figures_and_tables_are_artifacts(tracked_study, tmp_path):
    client = MlflowClient(tracked_study.tracking_uri)
    parent, children = _family(client, "__default__")
    run_id = parent.info.run_id
    top = {a.path for a in client.list_artifacts(run_id, "reporting")}
    figures = {a.path for a in client.list_artifacts(run_id, "reporting/figures")}
    assert {"reporting/report.html", "reporting/recall_by_variant.csv", "reporting/probe_results.csv",
            "reporting/report_summary.csv", "reporting/training_metrics.json"} <= top
    assert "reporting/figures/accuracy_vs_bits.png" in figures
    assert {f"reporting/figures/layers_{v}.png" for v in VARIANTS} <= figures
    # A variant's own figure is on its run too, and the uploaded report is the file on disk.
    variant_files = {a.path for a in client.list_artifacts(children["bnb_nf4"].info.run_id, "reporting/figures")}
    assert variant_files == {"reporting/figures/layers_bnb_nf4.png"}
    local = client.download_artifacts(run_id, "reporting/report.html", str(tmp_path))
    assert open(local, "rb").read() == (tracked_study.project / "data/08_reporting/report.html").read_bytes()


@pytest.mark.slow
def test_a_failing_run_is_marked_failed_with_what_it_logged(tracked_study, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(tracked_study.project, project, ignore=shutil.ignore_patterns("mlruns", "mlflow.db", "build"))
    shutil.rmtree(project / "data/06_models/variants/rtn_w2_g32")  # its evaluation must fail
    result = kedro(project, "run", "--env=test", "--pipeline=evaluate",
                   env={"MLFLOW_TRACKING_URI": tracked_study.tracking_uri})
    assert result.returncode != 0
    assert "kedro run --pipeline=quantize" in result.stdout + result.stderr

    client = MlflowClient(tracked_study.tracking_uri)
    parent, children = _family(client, "evaluate")
    assert parent.info.status == "FAILED"
    assert set(children) == VARIANTS
    assert {r.info.status for r in children.values()} == {"FAILED"}
    # What was measured before the failure stays logged; the failed variant has no recall.
    measured = {v for v, r in children.items() if "one_hop.accuracy" in r.data.metrics}
    assert measured and "rtn_w2_g32" not in measured


def test_metric_keys_and_flat_dicts():
    assert metric_key("two_hop.held_out.r2(r1(e1)).accuracy") == "two_hop.held_out.r2_r1_e1.accuracy"
    assert metric_key("a b/c:d-e") == "a b/c:d-e"
    assert metric_key("x,y=z") == "x_y_z"
    assert flat_numbers({"a": 1, "b(c)": 0.5}) == {"a": 1.0, "b_c": 0.5}
    assert flat_numbers({"a": 1, "b": {"c": 2}}) is None
    assert flat_numbers({"a": "text"}) is None
    assert flat_numbers(pd.DataFrame({"a": [1]})) is None


def test_layer_histories_from_a_tidy_table():
    table = pd.DataFrame(
        {
            "variant": ["fp", "fp", "fp", "q", "q"],
            "layer": [1, 0, 0, 0, 1],
            "probe": ["bridge", "bridge", "answer", "bridge", "bridge"],
            "metric": ["accuracy", "accuracy", "n_test", "accuracy", "accuracy"],
            "value": [0.5, 0.25, 10.0, 0.125, float("nan")],
        }
    )
    curves = layer_histories(table, "probe", skip_metrics=["n_test"])
    assert curves["fp"] == {"probe.bridge.accuracy": [(0, 0.25), (1, 0.5)]}  # sorted by layer
    assert curves["q"]["probe.bridge.accuracy"][0] == (0, 0.125)
    with pytest.raises(ValueError, match="needs the columns"):
        layer_histories(table.drop(columns="layer"), "probe")
