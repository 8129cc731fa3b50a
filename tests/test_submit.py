"""`kedro submit`: the job graph from the pipeline's namespaces, slurm.yml, the sbatch scripts,
and the test study on a real single-node Slurm (tests/slurm_cluster.py) tracked by a real
MLflow server: same recall table as `kedro run`, one parent run, a cancelled variant job
FAILED and named by the report, completed by a second `kedro submit`."""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
from conftest import TEST_DATA
from tracked_study import copy_project, kedro, running_mlflow_server

from fkr_kedro.scaleout import (
    JobGraphError,
    JobResources,
    SlurmConfigError,
    SlurmError,
    check_slurm,
    load_slurm_config,
    plan_jobs,
    render_script,
)


@dataclass
class Group:  # the shape of Kedro's GroupedNodes
    name: str
    type: str
    nodes: list[str]
    dependencies: list[str] = field(default_factory=list)


def study_groups(reader_of_fp: bool = False) -> list[Group]:
    """data -> train -> fp, a, b (a reads fp when ``reader_of_fp``) -> table -> report.<v>."""
    return [
        Group("data", "nodes", ["data"]),
        Group("train", "nodes", ["train"], ["data"]),
        Group("fp", "namespace", ["fp.q", "fp.e"], ["train"]),
        Group("a", "namespace", ["a.q", "a.e"], ["train", *(["fp"] if reader_of_fp else [])]),
        Group("b", "namespace", ["b.q", "b.e"], ["train"]),
        Group("train_metrics", "nodes", ["train_metrics"], ["train"]),
        Group("table", "nodes", ["table"], ["fp", "a", "b"]),
        Group("report", "namespace", ["report.a.plot", "report.b.plot"], ["table"]),
    ]


def test_the_job_graph_runs_the_shared_stages_and_the_reference_first_one_task_per_variant_then_the_report():
    parents = {"table": {"fp.e", "a.e", "b.e"}, "report.a.plot": {"table"}, "report.b.plot": {"table"}}
    graph = plan_jobs(study_groups(reader_of_fp=True), parallel=["fp", "b", "a"], first={"fp"}, node_parents=parents)
    assert graph.shared_nodes == ["data", "train", "fp.q", "fp.e", "train_metrics"]
    assert graph.first == ["fp"]
    assert graph.array == ["b", "a"]  # in the order given
    assert graph.array_nodes == {"a": ["a.q", "a.e"], "b": ["b.q", "b.e"]}
    assert graph.report_nodes == ["table", "report.a.plot", "report.b.plot"]
    assert graph.report_roots == ["table"]
    assert "2 task(s)" in graph.describe() and "afterany" in graph.describe()


def test_a_variant_reading_another_variant_that_is_not_run_first_is_an_error():
    with pytest.raises(JobGraphError, match=r"namespace 'a' reads the outputs of fp.*list the namespace"):
        plan_jobs(study_groups(reader_of_fp=True), parallel=["fp", "a", "b"], first=set())


def test_namespace_groups_in_a_cycle_are_an_error():
    groups = study_groups()
    groups[3].dependencies.append("table")  # a reads the table that reads a
    with pytest.raises(JobGraphError, match="cycle"):
        plan_jobs(groups, parallel=["fp", "a", "b"], first={"fp"})


def test_kedros_namespace_check_passes_and_every_variant_but_the_reference_is_an_array_task(monkeypatch):
    import warnings

    from kedro.framework.startup import bootstrap_project
    from kedro.pipeline import Pipeline
    from tracked_study import PROJECT_ROOT

    from fkr_kedro.pipeline_registry import register_pipelines
    from fkr_kedro.run_config import active_variants

    monkeypatch.chdir(PROJECT_ROOT)
    monkeypatch.setenv("KEDRO_ENV", "test")
    bootstrap_project(PROJECT_ROOT)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipelines = register_pipelines()
        default = Pipeline(pipelines["__default__"].nodes)
    assert not [str(w.message) for w in caught if "is interrupted" in str(w.message)]
    names = [spec.name for spec in active_variants()]
    graph = plan_jobs(default.group_nodes_by("namespace"), parallel=names, first={"fp"})
    assert graph.first == ["fp"] and graph.array == [n for n in names if n != "fp"]
    assert "train_model" in graph.shared_nodes and "build_report" in graph.report_nodes
    assert {n for n in graph.report_nodes if n.endswith("plot_variant_layers")} == {
        f"report.{n}.plot_variant_layers" for n in names
    }


def test_slurm_yml_merges_defaults_per_kind_and_rejects_bad_keys_and_values():
    config = load_slurm_config(
        {"slurm": {"setup": "source .venv/bin/activate", "defaults": {"cpus": 4, "time": "01:00:00", "extra": ["--qos=x"]},
                   "variant": {"gres": "gpu:1", "extra": ["--constraint=a100"]}}},
        "conf/paper/slurm.yml",
    )
    assert config.setup == ["source .venv/bin/activate"]
    variant = config.resources("variant")
    assert variant.sbatch_lines() == [
        "#SBATCH --time=01:00:00", "#SBATCH --cpus-per-task=4", "#SBATCH --gres=gpu:1",
        "#SBATCH --qos=x", "#SBATCH --constraint=a100",
    ]
    assert "--gres" not in " ".join(config.resources("report").sbatch_lines())
    with pytest.raises(SlurmConfigError, match=r"conf/x/slurm.yml: slurm.variant.gpus: Extra inputs"):
        load_slurm_config({"slurm": {"variant": {"gpus": 1}}}, "conf/x/slurm.yml")
    with pytest.raises(SlurmConfigError, match=r"slurm.defaults.time: .*'an hour' is not a Slurm time"):
        load_slurm_config({"slurm": {"defaults": {"time": "an hour"}}}, "conf/x/slurm.yml")
    with pytest.raises(SlurmConfigError, match="one top-level key `slurm:`"):
        load_slurm_config({"partition": "gpu"}, "conf/x/slurm.yml")


def test_an_array_script_runs_one_namespace_per_task_and_the_report_script_names_the_missing(tmp_path):
    script = render_script(
        "variant", "fkr-variant", JobResources(gres="gpu:1"), tmp_path, tmp_path / "logs", ["module load cuda"],
        {"FKR_MLFLOW_PARENT_RUN_ID": "abc"}, ["--env=paper"], array=["a", "b"], done_dir=tmp_path / "done",
    )
    assert "#SBATCH --array=0-1" in script.text and "#SBATCH --gres=gpu:1" in script.text
    assert 'kedro run --env=paper --namespaces="$NAMESPACE"' in script.text
    report = render_script(
        "report", "fkr-report", JobResources(), tmp_path, tmp_path / "logs", [], {}, ["--env=paper"],
        done_dir=tmp_path / "done", missing_check=["a", "b"],
    )
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "a.done").touch()
    # The report script's own check, run by bash without its final `kedro run`.
    check = report.text.split("exec kedro")[0] + 'echo "$FKR_MISSING_NAMESPACES"\n'
    out = subprocess.run(["bash", "-c", check], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "b"


def test_no_sbatch_on_path_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SlurmError, match="sbatch, sinfo not found on PATH.*--dry-run"):
        check_slurm(["gpu"])


# ---------------------------------------------------------------- against a real Slurm
@pytest.mark.slow
def test_an_unknown_partition_is_an_error_before_anything_is_submitted(slurm_cluster, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", slurm_cluster.env["SLURM_CONF"])
    check_slurm([slurm_cluster.partition])
    with pytest.raises(SlurmError, match=rf"unknown partition\(s\) gpu-a100 .*this cluster has {slurm_cluster.partition}"):
        check_slurm(["gpu-a100", slurm_cluster.partition])


@pytest.mark.slow
def test_dry_run_of_the_paper_env_asks_one_gpu_per_variant_task_without_a_gpu(tmp_path):
    project = copy_project(tmp_path / "project")
    result = kedro(project, "submit", "--env=paper", "--dry-run", env={"CUDA_VISIBLE_DEVICES": ""})
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-5000:]
    variant = out.split("# ---- variant.sbatch ----")[1].split("# ----")[0]
    assert "#SBATCH --gres=gpu:1" in variant
    assert "#SBATCH --array=0-4" in variant  # fp runs in the shared job; five variants left
    assert "NAMESPACES=(bnb_int8 bnb_nf4 gptq_w8_g128 gptq_w4_g128 awq_w4_g128)" in variant
    assert "--gres" not in out.split("# ---- report.sbatch ----")[1]
    assert "nothing submitted" in out and not (project / "logs" / "slurm" / "paper" / "study.json").exists()


def _dry_run_scripts(tmp_path, pipeline: str, env: str = "test"):
    """`kedro submit --env=<env> --pipelines=<pipeline> --dry-run` on a copy of the project:
    the project folder, and the printed variant (array) and report sbatch scripts."""
    project = copy_project(tmp_path / "project")
    result = kedro(project, "submit", f"--env={env}", f"--pipelines={pipeline}", "--dry-run")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-5000:]
    return project, out.split("# ---- variant.sbatch ----")[1].split("# ----")[0], out.split("# ---- report.sbatch ----")[1]


@pytest.mark.slow
def test_the_scaling_sweep_is_one_array_task_per_model_size(tmp_path):
    from fkr_kedro.scaling.config import namespace

    import yaml

    project, variant, report = _dry_run_scripts(tmp_path, "scaling")
    sizes = yaml.safe_load((project / "conf" / "test" / "parameters_scaling.yml").read_text())["scaling"]["sizes"]
    assert f"#SBATCH --array=0-{len(sizes) - 1}" in variant
    assert f"NAMESPACES=({' '.join(namespace(size) for size in sizes)})" in variant
    from_nodes = re.search(r"--from-nodes=(\S+)", report).group(1).split(",")
    assert "fit_scaling_laws" in from_nodes and "summarize_scaling_training" in from_nodes


@pytest.mark.slow
def test_each_further_training_seed_is_one_array_task_and_the_report_compares_the_seeds(tmp_path):
    """conf/seeds: the first seed's variants one task each (fp first, in the shared job), each
    further seed's whole study (its model and every variant) one task; the report job after them."""
    project, variant, report = _dry_run_scripts(tmp_path, "__default__", env="seeds")
    namespaces = re.search(r"NAMESPACES=\((.*)\)", variant).group(1).split()
    assert namespaces[-2:] == ["seed1", "seed2"] and "fp" not in namespaces
    assert "gptq_w4_g32_draw2" in namespaces and not any(n.startswith("seed0") for n in namespaces)
    assert f"#SBATCH --array=0-{len(namespaces) - 1}" in variant
    # The report job runs from the first seed's tables on; the comparison across seeds is downstream.
    assert "tabulate_variants" in re.search(r"--from-nodes=(\S+)", report).group(1).split(",")


@pytest.mark.slow
def test_the_capacity_sweep_is_one_array_task_per_model_size(tmp_path):
    _, variant, report = _dry_run_scripts(tmp_path, "capacity")
    assert "#SBATCH --array=0-1" in variant and "NAMESPACES=(capacity_a capacity_b)" in variant
    assert re.search(r"--from-nodes=(\S+)", report).group(1).split(",") == ["gather_capacity_points"]


def _squeue_empty(cluster, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not cluster.run("squeue", "-h", "-o", "%i").stdout.strip():
            return
        time.sleep(3)
    raise TimeoutError(f"jobs still queued after {timeout:.0f} s:\n{cluster.run('squeue').stdout}\n{cluster.logs()}")


def _job_logs(project: Path) -> str:
    return "\n".join(f"--- {p.name} ---\n{p.read_text()[-4000:]}" for p in sorted(project.glob("logs/slurm/*/*/*.out")))


@pytest.fixture
def submit_mlflow_server(tmp_path):
    """A tracking server of its own: the tracked study's server must hold that one study only."""
    with running_mlflow_server(tmp_path / "mlflow-server") as server:
        yield server


@pytest.mark.slow
def test_a_submitted_study_equals_kedro_run_isolates_a_cancelled_variant_and_resumes(
    slurm_cluster, submit_mlflow_server, tracked_study, tmp_path
):
    from mlflow.tracking import MlflowClient

    mlflow_server = submit_mlflow_server

    project = copy_project(tmp_path / "project")
    env = {**slurm_cluster.env, "MLFLOW_TRACKING_URI": mlflow_server.uri}
    first = kedro(project, "submit", "--env=test", env=env)
    out = first.stdout + first.stderr
    assert first.returncode == 0, out[-5000:]
    parent_id = re.search(r"MLflow: the study's run (\w+)", out)[1]
    array_id = re.search(r"submitted variant: job (\d+)", out)[1]
    names = re.search(r"NAMESPACES=\(([^)]*)\)", out)[1].split()
    cancelled = names[-1]
    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_run(parent_id).info.experiment_id

    def nested(status: str | None = None):
        runs = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
        return [r for r in runs if status is None or r.info.status == status]

    # Cancel the last variant's array task once its nested run is logging (the job is running).
    deadline = time.monotonic() + 900
    while not any(r.data.tags.get("variant") == cancelled for r in nested("RUNNING")):
        assert time.monotonic() < deadline, f"{cancelled} never started:\n{_job_logs(project)}"
        time.sleep(2)
    slurm_cluster.run("scancel", f"{array_id}_{names.index(cancelled)}")
    _squeue_empty(slurm_cluster, 900)
    logs = _job_logs(project)

    by_variant = {r.data.tags["variant"]: r for r in nested()}
    assert by_variant[cancelled].info.status == "FAILED", logs
    assert "SIGTERM" in by_variant[cancelled].data.tags.get("fkr.ended_by", ""), logs
    assert not [v for v, r in by_variant.items() if v != cancelled and "fkr.ended_by" in r.data.tags]
    assert {v: r.info.status for v, r in by_variant.items() if v != cancelled} == {
        v: "FINISHED" for v in ["fp", *names] if v != cancelled
    }, logs
    parent = client.get_run(parent_id)
    assert parent.info.status == "FAILED", logs  # a variant is missing
    assert parent.data.tags["fkr.missing_variants"] == cancelled
    assert parent.info.run_name == parent.data.tags["fkr.study_name"] and parent.info.run_name.startswith("test: ")
    report = (project / TEST_DATA / "08_reporting" / "report.html").read_text()
    assert f"Missing variants: {cancelled}" in report, logs
    partial = pd.read_csv(project / TEST_DATA / "08_reporting" / "recall_by_variant.csv")
    assert cancelled not in set(partial["variant"])

    second = kedro(project, "submit", "--env=test", env=env)
    out2 = second.stdout + second.stderr
    assert second.returncode == 0, out2[-5000:]
    assert "skipping the shared job" in out2
    for name in names[:-1]:
        assert f"skipping {name}: complete on disk" in out2
    assert f"submitting {cancelled}:" in out2 and f"MLflow: resuming the study's run {parent_id}" in out2
    assert f"NAMESPACES=({cancelled})" in out2
    _squeue_empty(slurm_cluster, 900)
    logs = _job_logs(project)

    submitted = pd.read_csv(project / TEST_DATA / "08_reporting" / "recall_by_variant.csv")
    reference = pd.read_csv(tracked_study.project / TEST_DATA / "08_reporting" / "recall_by_variant.csv")
    # Row for row the same table; the same numbers but for the evaluation's own timing
    # (eval.seconds, eval.prompts_per_second), which no two runs share.
    assert submitted.drop(columns="value").equals(reference.drop(columns="value"))
    timing = submitted["metric"].str.startswith("eval.")
    assert 0 < timing.sum() < len(submitted)
    pd.testing.assert_frame_equal(submitted[~timing], reference[~timing], check_exact=True)
    assert "Missing variants" not in (project / TEST_DATA / "08_reporting" / "report.html").read_text()
    runs = nested()
    assert sorted(r.data.tags["variant"] for r in runs) == sorted(["fp", *names, cancelled])  # the failed one stays
    latest = {}
    for run in sorted(runs, key=lambda r: r.info.start_time):
        latest[run.data.tags["variant"]] = run.info.status
    assert latest == {v: "FINISHED" for v in ["fp", *names]}, logs
    assert client.get_run(parent_id).info.status == "FINISHED", logs


def _two_variant_project(tmp_path: Path, calibration_size: int) -> Path:
    """A copy of the project whose test study has two variants: fp (run in the shared job) and
    gptq_w4_g32 (one array task) with ``calibration_size`` (over 3000 fails: too few texts)."""
    project = copy_project(tmp_path / "project")
    _set_gptq_calibration(project, calibration_size)
    return project


def _set_gptq_calibration(project: Path, calibration_size: int) -> None:
    path = project / "conf" / "test" / "parameters.yml"
    head = path.read_text().split("\nvariants:")[0]
    path.write_text(
        f"{head}\nvariants:\n  fp: {{method: fp}}\n"
        f"  gptq_w4_g32: {{method: gptq, bits: 4, group_size: 32, calibration_size: {calibration_size}}}\n"
    )


@pytest.mark.slow
def test_fix_and_resubmit_finishes_one_study_whose_every_variant_finished(slurm_cluster, submit_mlflow_server, tmp_path):
    """A bad setting fails one variant: its nested run FAILED with the exception, the study's
    run FAILED naming it; a second submit while the jobs are queued is refused, naming them;
    the fixed setting resubmitted: the same study run, a new nested run, everything FINISHED."""
    import json

    from mlflow.tracking import MlflowClient

    project = _two_variant_project(tmp_path, calibration_size=1_000_000)
    env = {**slurm_cluster.env, "MLFLOW_TRACKING_URI": submit_mlflow_server.uri}
    first = kedro(project, "submit", "--env=test", env=env)
    out = first.stdout + first.stderr
    assert first.returncode == 0, out[-5000:]
    parent_id = re.search(r"MLflow: the study's run (\w+)", out)[1]

    again = kedro(project, "submit", "--env=test", env=env)
    refused = again.stdout + again.stderr
    jobs = json.loads((project / "logs" / "slurm" / "test" / "study.json").read_text())["jobs"]
    assert len(jobs) == 4  # shared, variant, report, final
    assert again.returncode != 0 and "still has jobs queued or running" in refused, refused[-3000:]
    assert f"scancel {' '.join(jobs)}" in refused and "submitted" not in refused
    _squeue_empty(slurm_cluster, 900)
    logs = _job_logs(project)

    client = MlflowClient(submit_mlflow_server.uri)
    parent = client.get_run(parent_id)
    experiment = parent.info.experiment_id

    def nested():
        runs = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
                                  order_by=["attributes.start_time ASC"])
        return {r.data.tags["variant"]: r for r in runs}  # the latest of each variant

    assert parent.info.status == "FAILED", logs
    assert parent.data.tags["fkr.missing_variants"] == "gptq_w4_g32"
    assert "namespaces" not in parent.data.tags and "kedro_command" not in parent.data.tags  # job tags: nested runs
    runs = nested()
    assert runs["fp"].info.status == "FINISHED", logs
    gptq = runs["gptq_w4_g32"]
    assert gptq.info.status == "FAILED"
    failure = gptq.data.tags["fkr.failure"]  # the exception the quantize node raised
    assert failure.startswith("ValueError: variant 'gptq_w4_g32' asks for 1000000 calibration texts but only"), failure
    assert gptq.data.tags["slurm.job_id"] == f"{jobs[1]}_0" and gptq.data.tags["namespaces"] == "['gptq_w4_g32']"
    assert gptq.data.params["calibration_size"] == "1000000"

    _set_gptq_calibration(project, 32)
    second = kedro(project, "submit", "--env=test", env=env)
    out2 = second.stdout + second.stderr
    assert second.returncode == 0, out2[-5000:]
    assert f"MLflow: resuming the study's run {parent_id}" in out2 and "NAMESPACES=(gptq_w4_g32)" in out2
    _squeue_empty(slurm_cluster, 900)
    logs = _job_logs(project)

    studies = client.search_runs([experiment], filter_string="attributes.status != 'RUNNING'")
    assert [r.info.run_id for r in studies if "mlflow.parentRunId" not in r.data.tags] == [parent_id]  # one study
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED", logs
    assert "fkr.missing_variants" not in parent.data.tags
    assert {v: r.info.status for v, r in nested().items()} == {"fp": "FINISHED", "gptq_w4_g32": "FINISHED"}, logs
    assert nested()["gptq_w4_g32"].data.params["calibration_size"] == "32"


@pytest.mark.slow
def test_a_submission_refused_by_sbatch_cancels_its_jobs_and_ends_the_study_run(slurm_cluster, submit_mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    project = _two_variant_project(tmp_path, calibration_size=32)
    slurm_yml = project / "conf" / "test" / "slurm.yml"
    slurm_yml.write_text(slurm_yml.read_text() + "  variant:\n    mem: 900000G\n")  # more than the node has
    env = {**slurm_cluster.env, "MLFLOW_TRACKING_URI": submit_mlflow_server.uri}
    result = kedro(project, "submit", "--env=test", env=env)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-5000:]
    parent_id = re.search(r"MLflow: the study's run (\w+)", out)[1]
    shared = re.search(r"submitted shared: job (\d+)", out)[1]
    assert "sbatch refused the variant job" in out and f"cancelled the jobs submitted before it ({shared})" in out
    parent = MlflowClient(submit_mlflow_server.uri).get_run(parent_id)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["fkr.ended_by"].startswith("sbatch refused the variant job: sbatch --parsable")
    assert not slurm_cluster.run("squeue", "-h", "-o", "%i").stdout.strip()  # the shared job is gone


def test_params_are_read_as_kedro_run_reads_them():
    import click

    from fkr_kedro.cli import _parse_params

    assert _parse_params("base_model.id=Qwen/Qwen2.5-14B,training.steps=3") == {
        "base_model": {"id": "Qwen/Qwen2.5-14B"}, "training": {"steps": 3}
    }
    with pytest.raises(click.UsageError, match="'steps' must be key=value"):
        _parse_params("steps")


def test_the_final_job_gives_a_task_cancelled_before_python_a_failed_run_and_fails_the_study(tmp_path):
    """``end_study`` on a real MLflow store, with the Slurm states the final job reads: a task
    cancelled while pending gets a FAILED nested run naming its state; a run left RUNNING
    (killed outright) ends FAILED; the study run FAILED naming both; once both are rerun and
    finished, FINISHED."""
    from mlflow.tracking import MlflowClient

    from fkr_kedro.tracking import end_study

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("study", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(experiment, run_name="study").info.run_id

    def nested(variant: str, status: str | None) -> str:
        run = client.create_run(experiment, tags={"mlflow.parentRunId": parent, "variant": variant}).info.run_id
        if status:
            client.set_terminated(run, status)
        return run

    since = int(time.time() * 1000) - 1000
    nested("fp", "FINISHED")
    killed = nested("a", None)  # still RUNNING: its process was killed outright
    states = {"1": ("COMPLETED", ""), "2_0": ("TIMEOUT", ""), "2_1": ("CANCELLED", "DependencyNeverSatisfied")}
    status, missing = end_study(client, parent, ["fp", "a", "b"], {"fp": "1", "a": "2_0", "b": "2_1"}, states, since,
                                {"shared": "1"})
    assert (status, missing) == ("FAILED", ["a", "b"])
    assert client.get_run(killed).info.status == "FAILED"
    assert client.get_run(killed).data.tags["fkr.failure"] == "Slurm job 2_0 ended TIMEOUT while the run was open"
    runs = client.search_runs([experiment], filter_string="tags.variant = 'b'")
    assert [(r.info.status, r.data.tags["fkr.failure"]) for r in runs] == [
        ("FAILED", "Slurm job 2_1 ended CANCELLED (DependencyNeverSatisfied) before its run started")
    ]
    study = client.get_run(parent)
    assert study.info.status == "FAILED" and study.data.tags["fkr.missing_variants"] == "a b"

    since = int(time.time() * 1000)
    time.sleep(0.01)
    nested("a", "FINISHED"), nested("b", "FINISHED")
    states = {"3_0": ("COMPLETED", ""), "3_1": ("COMPLETED", "")}
    assert end_study(client, parent, ["fp", "a", "b"], {"a": "3_0", "b": "3_1"}, states, since) == ("FINISHED", [])
    study = client.get_run(parent)
    assert study.info.status == "FINISHED" and "fkr.missing_variants" not in study.data.tags


def test_array_tasks_listed_as_one_record_count_one_by_one():
    from fkr_kedro.scaleout.sbatch import _expand_arrays

    states = _expand_arrays({"7_[0-2,5%2]": ("CANCELLED", "DependencyNeverSatisfied"), "7_3": ("FAILED", "")})
    assert {k: v[0] for k, v in states.items() if not k.endswith("]")} == {
        "7_0": "CANCELLED", "7_1": "CANCELLED", "7_2": "CANCELLED", "7_3": "FAILED", "7_5": "CANCELLED"
    }


@pytest.mark.slow
def test_a_second_training_seed_runs_as_one_array_task_on_slurm_and_the_report_compares_the_seeds(
    slurm_cluster, submit_mlflow_server, tmp_path
):
    """training_seeds [0, 1] on the real single-node Slurm: seed 1's whole study is one array
    task beside the first seed's variant; every nested run FINISHED with its training seed,
    and the report job compares the two seeds (seed_summary over 2 seeds, variance components
    from both seeds' prompt_outcomes)."""
    from mlflow.tracking import MlflowClient

    project = _two_variant_project(tmp_path, calibration_size=32)
    path = project / "conf" / "test" / "parameters.yml"
    path.write_text(path.read_text() + "training_seeds: [0, 1]\n")
    env = {**slurm_cluster.env, "MLFLOW_TRACKING_URI": submit_mlflow_server.uri}
    submitted = kedro(project, "submit", "--env=test", env=env)
    out = submitted.stdout + submitted.stderr
    assert submitted.returncode == 0, out[-5000:]
    assert "NAMESPACES=(gptq_w4_g32 seed1)" in out, out[-5000:]
    parent_id = re.search(r"MLflow: the study's run (\w+)", out)[1]
    _squeue_empty(slurm_cluster, 900)
    logs = _job_logs(project)

    client = MlflowClient(submit_mlflow_server.uri)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED", logs
    runs = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
    nested = {r.data.tags["mlflow.runName"]: r for r in runs}
    assert set(nested) == {"fp", "gptq_w4_g32", "seed1.fp", "seed1.gptq_w4_g32"}, logs
    assert all(r.info.status == "FINISHED" for r in nested.values()), logs
    assert nested["seed1.gptq_w4_g32"].data.params["training_seed"] == "1"
    assert nested["gptq_w4_g32"].data.params["training_seed"] == "0"

    reporting = project / TEST_DATA / "08_reporting"
    summary = pd.read_csv(reporting / "seed_summary.csv")
    assert set(summary["variant_group"]) == {"gptq_w4_g32"} and set(summary["seeds"]) == {2}
    components = pd.read_csv(reporting / "variance_components.csv")
    assert len(components) == 2 and components["seeds"].eq(2).all()
    assert (project / TEST_DATA / "seed1" / "08_reporting" / "prompt_outcomes.parquet").is_file()
