"""`kedro viz build` of the test project, rendered by headless Chromium from a local server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tracked_study import PROJECT_ROOT, free_port, kedro, wait_for_http

CHROMIUM = Path("/usr/bin/chromium")
# Screenshots are kept here for people to look at (git ignores the folder).
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
VARIANTS = ("fp", "bnb_int8", "bnb_nf4", "gptq_w4_g32", "rtn_w2_g32")


def _chromium(*args: str, profile: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def viz_site(tracked_study, tmp_path_factory):
    """The static kedro-viz site of the test project, served on a free localhost port."""
    result = kedro(tracked_study.project, "viz", "build", env={"KEDRO_ENV": "test"}, timeout=600)
    build = tracked_study.project / "build"
    assert result.returncode == 0 and (build / "index.html").is_file(), (result.stdout + result.stderr)[-4000:]
    port = free_port()
    log = tmp_path_factory.mktemp("http") / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=build, stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/index.html", server, timeout=30, log=log)
        yield build, f"http://127.0.0.1:{port}/"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.slow
def test_static_build_holds_every_pipeline_and_variant_namespace(viz_site):
    build, _ = viz_site
    registered = json.loads((build / "api/main").read_text())
    pipelines = {p["id"] for p in registered["pipelines"]}
    assert {"__default__", "data_prep", "train", "quantize", "evaluate", "probe", "report"} <= pipelines
    default = json.loads((build / "api/pipelines/__default__").read_text())
    namespaces = {n["name"] for n in default["nodes"] if n["type"] == "modularPipeline"}
    assert set(VARIANTS) <= namespaces, "one collapsible box per variant namespace"
    report = json.loads((build / "api/pipelines/report").read_text())
    assert {"plot_accuracy_vs_bits", "build_report"} <= {n["name"] for n in report["nodes"]}


@pytest.mark.slow
def test_static_site_renders_in_headless_chromium(viz_site, tmp_path):
    if not CHROMIUM.exists():
        pytest.fail("Chromium is needed to render the kedro-viz site: install it with `apt-get install -y chromium`")
    _, url = viz_site
    dom = _chromium("--virtual-time-budget=30000", "--dump-dom", url, profile=tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-3000:]
    # The flowchart's SVG nodes: one collapsed box per variant namespace and the other nodes.
    rendered = dict(
        (name, kind) for kind, name in re.findall(
            r'<g[^>]*class="pipeline-node[ "][^>]*data-node-type="(\w+)"[^>]*data-node-fullname="([^"]+)"', dom.stdout
        )
    )
    assert rendered, f"no graph node in the rendered page:\n{dom.stdout[:2000]}"
    for variant in VARIANTS:
        assert rendered.get(variant) == "modularPipeline", f"no box for the variant namespace {variant}"
    for node in ("generate_synthetic_world", "train_model", "tabulate_variants", "summarize_probes", "build_report"):
        assert rendered.get(node) == "task", f"node {node} not in the rendered graph"

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "kedro-viz.png"
    result = _chromium(
        "--virtual-time-budget=30000", "--window-size=1600,1000", f"--screenshot={shot}", url,
        profile=tmp_path / "profile-shot",
    )
    assert result.returncode == 0 and shot.is_file() and shot.stat().st_size > 20_000, result.stderr[-3000:]
    print(f"kedro-viz screenshot: {shot}")


@pytest.mark.slow
def test_mlflow_runs_table_lists_the_study_and_its_variants(tracked_study, tmp_path):
    """The tracked study as a user opens it: MLflow's runs table, rendered by headless Chromium
    from the tracking server, lists the study run by its name and every variant run."""
    import html

    from mlflow.tracking import MlflowClient

    from fkr_kedro.tracking import runs_table_link

    if not CHROMIUM.exists():
        pytest.fail("Chromium is needed to render the MLflow UI: install it with `apt-get install -y chromium`")
    client = MlflowClient(tracked_study.tracking_uri)
    experiment = client.get_experiment_by_name("fkr_kedro")
    (study,) = client.search_runs([experiment.experiment_id], "tags.pipeline = '__default__' and tags.kedro_env = 'test'"
                                  " and attributes.status = 'FINISHED'")
    url = f"{tracked_study.tracking_uri}/{runs_table_link(experiment.experiment_id, flat=True)}"
    dom = _chromium("--virtual-time-budget=30000", "--dump-dom", url, profile=tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-3000:]
    text = html.unescape(dom.stdout)
    assert study.info.run_name in text, f"the study run is not in the runs table:\n{text[:3000]}"
    for variant in VARIANTS:
        assert f">{variant}<" in text, f"no variant run {variant} in the runs table"

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "mlflow-runs.png"
    result = _chromium("--virtual-time-budget=30000", "--window-size=1600,1000", f"--screenshot={shot}", url,
                       profile=tmp_path / "profile-shot")
    assert result.returncode == 0 and shot.is_file() and shot.stat().st_size > 20_000, result.stderr[-3000:]
    print(f"MLflow runs table screenshot: {shot}")
