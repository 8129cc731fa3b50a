"""MLflow tracking of `kedro run` against a real MLflow server (tests/tracked_study.py)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from fkr_kedro.tracking import (
    TrackingDeclarationError,
    TrackingStoreError,
    check_artifact_location,
    check_declarations,
    check_env,
    check_sqlite_store,
    end_stale_runs,
    flat_numbers,
    layer_histories,
    log_saved,
    metric_key,
    parse_declaration,
    process_tags,
    sqlite_path,
)
from conftest import TEST_DATA
from tracked_study import KEDRO, PROJECT_ROOT, copy_project, kedro

VARIANTS = {"fp", "bnb_int8", "bnb_nf4", "gptq_w4_g32", "rtn_w2_g32"}


def _runs(client: MlflowClient, run_name: str | None = None):
    experiment = client.get_experiment_by_name("fkr_kedro")
    assert experiment is not None, "no experiment fkr_kedro on the server"
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    return [r for r in runs if run_name is None or r.info.run_name == run_name]


def _family(client: MlflowClient, pipeline: str):
    """The most recent pipeline run of that pipeline and its nested runs, by variant."""
    parents = [r for r in _runs(client) if "mlflow.parentRunId" not in r.data.tags
               and r.data.tags.get("pipeline") == pipeline]
    assert parents, f"no pipeline run of {pipeline!r}"
    parent = max(parents, key=lambda r: r.info.start_time)
    children = {
        r.info.run_name: r for r in _runs(client) if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    return parent, children


@pytest.mark.slow
def test_one_pipeline_run_with_a_nested_run_per_variant(tracked_study):
    client = MlflowClient(tracked_study.tracking_uri)
    parents = [r for r in _runs(client) if "mlflow.parentRunId" not in r.data.tags
               and r.data.tags.get("pipeline") == "__default__"]
    assert len(parents) == 1, "one `kedro run` makes one pipeline run"
    parent, children = _family(client, "__default__")
    assert parent.info.status == "FINISHED"
    assert set(children) == VARIANTS
    assert {r.info.status for r in children.values()} == {"FINISHED"}
    # Named by the study, not by the pipeline; the process that ran it is on every run.
    model, source = "llama trained from scratch (2 layers, width 64)", "synthetic world (seed 0, 200 people)"
    assert parent.info.run_name == f"test: {model} on {source}, 5 variants"
    assert {parent.data.tags[k] for k in ("fkr.pid", "fkr.host")} and parent.data.tags["kedro_env"] == "test"
    # The experiment opens on its runs table in MLflow 3's UI, not on the GenAI overview.
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    # Tags to filter variant runs by, and descriptions that point at the report.
    assert {k: children["gptq_w4_g32"].data.tags[k] for k in ("method", "bits", "group_size", "model",
                                                              "knowledge_source")} == {
        "method": "gptq", "bits": "4", "group_size": "32", "model": model, "knowledge_source": source,
    }
    found = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' "
                               "and tags.method = 'gptq' and tags.bits = '4'")
    assert [r.info.run_name for r in found] == ["gptq_w4_g32"]
    report_link = f"runs/{parent.info.run_id}/artifactPath/reporting/report.html"
    assert report_link in parent.data.tags["mlflow.note.content"]
    assert all(report_link in r.data.tags["mlflow.note.content"] for r in children.values())

    # The params that Compare lines up, with the values of conf/test/parameters.yml.
    gptq = children["gptq_w4_g32"].data.params
    assert {k: gptq[k] for k in ("method", "bits", "group_size", "calibration_size", "calibration_seed",
                                 "variant_group")} == {
        "method": "gptq", "bits": "4", "group_size": "32", "calibration_size": "32", "calibration_seed": "0",
        "variant_group": "gptq_w4_g32",
    }
    assert children["rtn_w2_g32"].data.params["calibration_size"] == "None"  # RTN takes no calibration
    assert children["rtn_w2_g32"].data.params["calibration_seed"] == "None"
    # The quantize node does the work: its wall time is on the variant's run.
    assert children["gptq_w4_g32"].data.metrics["node_seconds.quantize"] > 0
    assert children["bnb_nf4"].data.params["method"] == "bnb_nf4"
    for run in children.values():
        assert run.data.params["model"] == "llama trained from scratch (2 layers, width 64)"
        assert run.data.params["dataset"] == "synthetic world (seed 0, 200 people)"

    # Each variant's metrics are the numbers the evaluate pipeline wrote for it.
    for variant, run in children.items():
        folder = tracked_study.project / TEST_DATA / "07_model_output" / variant
        for name in ("recall_metrics.json", "footprint.json"):
            expected = flat_numbers(json.loads((folder / name).read_text()))
            assert {k: run.data.metrics[k] for k in expected} == pytest.approx(expected), (variant, name)
    assert "two_hop.seen.r2_r1_e1.accuracy" in children["fp"].data.metrics  # "r2(r1(e1))" made valid

    # Unnamespaced *_metrics datasets are metrics of the pipeline run.
    training = flat_numbers(json.loads((tracked_study.project / TEST_DATA / "08_reporting/training_metrics.json").read_text()))
    assert {k: parent.data.metrics[k] for k in training} == pytest.approx(training)
    # kedro-mlflow logged the parameters on the same run.
    assert parent.data.params["training.steps"] == "300"


@pytest.mark.slow
def test_per_layer_curves_are_metric_histories_with_step_layer(tracked_study):
    client = MlflowClient(tracked_study.tracking_uri)
    _, children = _family(client, "__default__")
    reporting = tracked_study.project / TEST_DATA / "08_reporting"
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
    assert open(local, "rb").read() == (tracked_study.project / TEST_DATA / "08_reporting/report.html").read_bytes()


@pytest.mark.slow
def test_a_failing_run_is_marked_failed_with_what_it_logged(tracked_study, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(tracked_study.project, project, ignore=shutil.ignore_patterns("mlruns", "mlflow.db", "build"))
    shutil.rmtree(project / TEST_DATA / "06_models/variants/rtn_w2_g32")  # its evaluation must fail
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
    # Interval and test columns qualify the value: not part of the key; stderr is its own curve.
    with_stats = table.assign(stderr=[0.1, 0.05, float("nan"), 0.2, 0.2], ci_low=0.0, ci_high=1.0, p_holm=0.5)
    curves = layer_histories(with_stats, "probe", skip_metrics=["n_test"])
    assert curves["fp"] == {"probe.bridge.accuracy": [(0, 0.25), (1, 0.5)],
                            "probe.bridge.accuracy_stderr": [(0, 0.05), (1, 0.1)]}


# --- Declared tracking: catalog entries say what is logged -------------------------------------


def _project_catalog(env: str = "test"):
    from kedro.io import DataCatalog

    from fkr_kedro.run_config import StudyConfigLoader  # the project's loader: ${study_root:}

    loader = StudyConfigLoader(str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="local", env=env)
    return DataCatalog.from_config(loader["catalog"])


def test_catalog_declares_what_is_tracked_and_factories_keep_it():
    catalog = _project_catalog()
    # A namespaced factory entry keeps its metadata, on the dataset and in the resolved entry.
    assert catalog.get("gptq_w4_g32.recall_metrics").metadata == {"fkr_tracking": "metric"}
    assert catalog.config_resolver.resolve_pattern("fp.footprint")["metadata"] == {"fkr_tracking": "metric"}
    assert parse_declaration("fp.layers_plot", catalog.get("fp.layers_plot").metadata).artifact_path == (
        "reporting/figures"
    )
    probe = parse_declaration("probe_results", catalog.get("probe_results").metadata)
    assert (probe.curve_prefix, probe.artifact_path, probe.metric) == ("probe", "reporting", False)
    report = parse_declaration("report_html", catalog.get("report_html").metadata)
    assert report.report and report.artifact_path == "reporting"
    # Every entry that writes a report file is declared an artifact: a new one is not forgotten.
    undeclared = [
        name for name, entry in catalog.config_resolver.config.items()
        if "08_reporting" in str(entry.get("filepath", "")) and "dataset" not in entry
        and parse_declaration(name, entry.get("metadata")) is None
    ]
    undeclared += [
        pattern for pattern in catalog.config_resolver.list_patterns()
        if "08_reporting" in str(catalog.config_resolver.resolve_pattern(pattern.replace("{", "x").replace("}", "x"))
                                 .get("filepath", ""))
        and parse_declaration(pattern, catalog.config_resolver.resolve_pattern(
            pattern.replace("{", "x").replace("}", "x")).get("metadata")) is None
    ]
    assert undeclared == []


def test_declaration_forms_and_malformed_ones():
    assert parse_declaration("d", None) is None
    assert parse_declaration("d", {"kedro-viz": {"preview": False}}) is None
    both = parse_declaration("d", {"fkr_tracking": ["metric", "artifact"]})
    assert both.metric and both.artifact_path == "" and both.kinds == ("metric", "artifact")
    with pytest.raises(TrackingDeclarationError, match=r"'d'.*unknown kind.*'metrics'"):
        parse_declaration("d", {"fkr_tracking": "metrics"})
    with pytest.raises(TrackingDeclarationError, match="needs the histories' name prefix"):
        parse_declaration("d", {"fkr_tracking": "per_layer_curve"})
    with pytest.raises(TrackingDeclarationError, match="true or false"):
        parse_declaration("d", {"fkr_tracking": {"metric": "yes"}})
    # Before a run: an artifact must be a dataset that writes somewhere.
    artifact = parse_declaration("in_memory", {"fkr_tracking": "artifact"})
    check_declarations([artifact], {"in_memory": "data/08_reporting/x.csv"})
    with pytest.raises(TrackingDeclarationError, match=r"\['in_memory'\] declare `fkr_tracking: artifact` but have no"):
        check_declarations([artifact], {"in_memory": None})


class _RecordingRuns:
    """Stands in for VariantRuns: records what would be logged."""

    def __init__(self):
        self.logged = []

    def log_metrics(self, metrics, variant=None):
        self.logged.append(("metrics", variant, dict(metrics)))

    def log_histories(self, variant, curves):
        self.logged.append(("histories", variant, dict(curves)))

    def log_artifact(self, path, artifact_path=None, variant=None):
        self.logged.append(("artifact", variant, artifact_path, Path(path).name))


def test_declared_kinds_are_logged_and_a_misfit_is_an_error(tmp_path):
    runs = _RecordingRuns()
    metric = parse_declaration("fp.recall_metrics", {"fkr_tracking": "metric"})
    log_saved(runs, metric, {"one_hop.accuracy": 0.5}, "fp", None)
    assert runs.logged == [("metrics", "fp", {"one_hop.accuracy": 0.5})]

    table = pd.DataFrame({"variant": ["fp", "fp"], "layer": [1, 0], "probe": ["answer"] * 2,
                          "metric": ["accuracy"] * 2, "value": [0.75, 0.25]})
    file = tmp_path / "probe_results.csv"
    table.to_csv(file, index=False)
    curves = parse_declaration("probe_results", {"fkr_tracking": {"per_layer_curve": "probe", "artifact": "reporting"}})
    runs.logged.clear()
    log_saved(runs, curves, table, None, file)
    assert runs.logged == [
        ("histories", "fp", {"probe.answer.accuracy": [(0, 0.25), (1, 0.75)]}),
        ("artifact", None, "reporting", "probe_results.csv"),
    ]

    with pytest.raises(TrackingDeclarationError, match=r"fp.recall_metrics is declared `fkr_tracking: metric`.*"
                                                       r"a dict of dict, not a flat dict of numbers"):
        log_saved(runs, metric, {"one_hop": {"accuracy": 0.5}}, "fp", None)
    with pytest.raises(TrackingDeclarationError, match=r"probe_results is declared.*per_layer_curve.*columns \['a'\]"):
        log_saved(runs, curves, pd.DataFrame({"a": [1]}), None, file)
    with pytest.raises(TrackingDeclarationError, match="nothing exists at"):
        log_saved(runs, curves, table, None, tmp_path / "missing.csv")


# --- Honest run states -------------------------------------------------------------------------


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_running_run_of_a_dead_process_is_marked_killed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the SQLite store's default artifact folder
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("stale")
    host = socket.gethostname()
    dead = client.create_run(experiment, tags={"fkr.pid": str(_dead_pid()), "fkr.host": host}).info.run_id
    alive = client.create_run(experiment, tags=process_tags()).info.run_id
    elsewhere = client.create_run(experiment, tags={"fkr.pid": "1", "fkr.host": "another-host"}).info.run_id
    untagged = client.create_run(experiment).info.run_id

    assert end_stale_runs(client, [experiment]) == [dead]
    status = {run_id: client.get_run(run_id).info.status for run_id in (dead, alive, elsewhere, untagged)}
    assert status == {dead: "KILLED", alive: "RUNNING", elsewhere: "RUNNING", untagged: "RUNNING"}
    assert "no longer exists" in client.get_run(dead).data.tags["fkr.ended_by"]
    # A pid reused by a later process is not the run's process.
    reused = client.create_run(experiment, tags={**process_tags(), "fkr.process_start": "1"}).info.run_id
    assert end_stale_runs(client, [experiment]) == [reused]


_GUARDED = """
import sys, time
from fkr_kedro.tracking import RunGuard
ended = []
guard = RunGuard(lambda status, reason: open(sys.argv[1], "a").write(f"{status}: {reason}\\n"))
guard.install()
if sys.argv[2] == "raise":
    raise RuntimeError("boom")
if sys.argv[2] == "finish":
    guard.uninstall()
    sys.exit(0)
print("ready", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("how, expected", [("raise", "FAILED: process"), ("finish", ""), ("sigterm", "KILLED: SIGTERM")])
def test_run_guard_ends_open_runs_on_exit_or_signal(tmp_path, how, expected):
    record = tmp_path / "ended.txt"
    record.touch()
    process = subprocess.Popen([sys.executable, "-c", _GUARDED, str(record), how], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT / "src")})
    if how == "sigterm":
        assert process.stdout.readline().strip() == "ready"
        process.send_signal(signal.SIGTERM)
    process.wait(timeout=120)
    assert record.read_text().startswith(expected) and record.read_text().count("\n") == (1 if expected else 0)
    if how == "sigterm":
        assert process.returncode == -signal.SIGTERM  # the signal still ends the process


def _wait_for_variant_runs(client: MlflowClient, pid: int, process: subprocess.Popen, timeout: float = 600):
    """The pipeline run of process ``pid`` once its nested variant runs exist."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "kedro run ended before its variant runs were opened"
        experiment = client.get_experiment_by_name("fkr_kedro")
        if experiment is not None:
            runs = client.search_runs([experiment.experiment_id], f"tags.`fkr.pid` = '{pid}'", max_results=100)
            parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
            if parents and len(runs) == len(parents) + len(VARIANTS):
                return parents[0]
        time.sleep(1)
    raise TimeoutError("no variant runs within the timeout")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_run_stopped_by_a_signal_ends_killed(mlflow_server, tmp_path, signum):
    project = copy_project(tmp_path / "project")
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_TRACKING_URI": mlflow_server.uri}
    log = tmp_path / "kedro.log"
    with log.open("w") as out:
        # The default disposition: a shell that starts pytest in the background (`cmd &`) leaves
        # SIGINT ignored in its children, and an ignored SIGINT stays ignored (RunGuard).
        process = subprocess.Popen([*KEDRO, "run", "--env=test"], cwd=project, env=environment, stdout=out,
                                   stderr=subprocess.STDOUT,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        client = MlflowClient(mlflow_server.uri)
        parent = _wait_for_variant_runs(client, process.pid, process)
        process.send_signal(signum)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    parent = client.get_run(parent.info.run_id)
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert parent.info.status == "KILLED", log.read_text()[-3000:]
    assert len(children) == len(VARIANTS) and {r.info.status for r in children} == {"KILLED"}
    assert signal.Signals(signum).name in parent.data.tags["fkr.ended_by"]
    assert process.returncode != 0


# --- Where runs are recorded: env, store, artifact location -----------------------------------


def test_an_unknown_env_names_the_available_ones(tmp_path):
    for env in ("base", "test", "local"):
        (tmp_path / env).mkdir()
    check_env(tmp_path, "test")
    with pytest.raises(TrackingStoreError, match=r"'doesnotexist' does not exist.*base, local, test"):
        check_env(tmp_path, "doesnotexist")


def test_sqlite_uris():
    cwd = Path("/project")
    assert sqlite_path("sqlite:///mlflow.db", cwd) == cwd / "mlflow.db"
    assert sqlite_path("sqlite:////abs/mlflow.db", cwd) == Path("/abs/mlflow.db")
    assert sqlite_path("http://127.0.0.1:5000", cwd) is None and sqlite_path(None, cwd) is None


def test_a_corrupt_or_emptied_store_is_an_error_naming_the_file_and_the_fix(tmp_path, caplog):
    database = tmp_path / "mlflow.db"
    database.write_bytes(b"this is not a database at all, just text")
    with pytest.raises(TrackingStoreError, match=rf"{database} is not an SQLite database.*mv {database}"):
        check_sqlite_store(database)
    database.write_bytes(b"")
    with pytest.raises(TrackingStoreError, match=rf"{database} is empty \(0 bytes\).*mv {database}"):
        check_sqlite_store(database)
    database.unlink()
    sqlite3.connect(database).execute("CREATE TABLE notes (x)").connection.commit()
    with pytest.raises(TrackingStoreError, match="without MLflow's tables"):
        check_sqlite_store(database)
    database.unlink()
    # No store but artifacts of earlier runs: a warning (a new store is legitimate).
    (tmp_path / "mlruns" / "1" / "0123abcd" / "artifacts").mkdir(parents=True)
    with caplog.at_level(logging.WARNING):
        check_sqlite_store(database, artifact_root=tmp_path / "mlruns")
    assert f"{database} does not exist" in caplog.text and "earlier runs" in caplog.text
    MlflowClient(f"sqlite:///{database}").search_experiments()  # a real store passes
    check_sqlite_store(database, artifact_root=tmp_path / "mlruns")


def test_a_copied_store_may_not_write_into_the_original_project(tmp_path):
    project = tmp_path / "copy"
    project.mkdir()
    check_artifact_location("fkr_kedro", f"file://{project}/mlruns/1", project / "mlflow.db", project)
    check_artifact_location("fkr_kedro", "mlflow-artifacts:/1", project / "mlflow.db", project)
    with pytest.raises(TrackingStoreError, match=r"outside this project.*mv .*mlflow.db mlflow.db.copied"):
        check_artifact_location("fkr_kedro", str(tmp_path / "original/mlruns/1"), project / "mlflow.db", project)
    # A store outside the project is not the project's own.
    check_artifact_location("fkr_kedro", "/elsewhere/mlruns/1", tmp_path / "shared.db", project)


def _kedro_without_tracking_uri(project: Path, *args: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    environment.update(OMP_NUM_THREADS="1", COLUMNS="200")
    return subprocess.run([*KEDRO, *args], cwd=project, env=environment, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_kedro_run_stops_early_on_a_bad_env_store_or_copied_store(tmp_path):
    original = copy_project(tmp_path / "original")
    result = _kedro_without_tracking_uri(original, "run", "--env=doesnotexist", "--pipeline=report")
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0 and "'doesnotexist' does not exist" in output, output[-3000:]
    envs = ", ".join(sorted(p.name for p in (original / "conf").iterdir() if p.is_dir()))
    assert "base" in envs and "test" in envs
    assert envs in output and "maintenance mode" not in output

    (original / "mlflow.db").write_text("not a database")
    result = _kedro_without_tracking_uri(original, "run", "--env=test", "--pipeline=report")
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0 and "is not an SQLite database" in output, output[-3000:]

    # A store made in the original project, then copied with it: its artifacts are the original's.
    (original / "mlflow.db").unlink()
    subprocess.run([sys.executable, "-c", "from mlflow.tracking import MlflowClient; "
                    "MlflowClient('sqlite:///mlflow.db').create_experiment('fkr_kedro')"], cwd=original, check=True)
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    result = _kedro_without_tracking_uri(copy, "run", "--env=test", "--pipeline=report")
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode != 0 and "outside this project" in output and str(original) in output, output[-3000:]
    assert not (original / "mlruns" / "1").exists() or not any((original / "mlruns" / "1").iterdir())


def test_no_mlflow_run_stays_active_between_runs_in_one_process(kedro_project, monkeypatch):
    """Two `session.run`s in one process (a notebook): the second opens its own run, even with
    other parameters (kedro-mlflow leaves copies of the first on MLflow's run stack)."""
    import mlflow

    from conftest import run_kedro

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    started = int(time.time() * 1000)
    run_kedro(kedro_project, pipeline="data_prep")
    assert mlflow.active_run() is None
    run_kedro(kedro_project, pipeline="data_prep", params={"evaluation_sample": {"max_per_relation": 3}})
    assert mlflow.active_run() is None
    client = mlflow.MlflowClient(mlflow.get_tracking_uri())  # the store kedro-mlflow set for the runs
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    runs = [r for r in runs if r.info.start_time >= started]
    assert sorted(r.data.params["evaluation_sample.max_per_relation"] for r in runs) == ["100", "3"]
    assert {r.info.status for r in runs} == {"FINISHED"}
