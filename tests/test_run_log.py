"""A run that speaks briefly (hooks/runlog.py): repeated library warnings once with a count,
one line per node, a summary at the end; and the guard against outputs without a catalog
entry (kedro_config.check_outputs_configured)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pandas as pd
import pytest
from kedro.io import DataCatalog
from kedro.pipeline import Pipeline, node
from kedro.runner import SequentialRunner

from fkr_kedro.hooks import ActiveConfigHook, RunSummaryHook
from fkr_kedro.hooks.runlog import RepeatedMessageFilter
from fkr_kedro.kedro_config import UnconfiguredOutputError, check_outputs_configured, unconfigured_outputs

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class _Lines(logging.Handler):
    """The formatted lines a handler would write."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def handler():
    """The root logger's only handler, seeing what the console would, the filters attached as
    the hook does (the handlers of earlier tests, and the process-wide filter on them, are set
    aside: a record is decided once, by the first filter that sees it)."""
    root = logging.getLogger()
    lines = _Lines()
    # An earlier run in this process may have left logging capturing warnings into a
    # showwarning that pytest has since replaced; start from Python's own.
    logging.captureWarnings(False)
    old_level, old_handlers = root.level, root.handlers[:]
    root.handlers = [lines]
    root.setLevel(logging.INFO)
    yield lines
    root.handlers = old_handlers
    root.setLevel(old_level)
    logging.captureWarnings(False)


def _batch(step: int) -> None:
    # As a library does on every batch: a fresh warnings context (which resets Python's
    # once-per-location registry), then the same warning.
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("inputs will be cast to float16\n(batch 0)", UserWarning, stacklevel=1)
    logging.getLogger("bitsandbytes.autograd._functions").warning(
        "MatMul8bitLt: inputs will be cast from %s to float16 during quantization", "torch.float32"
    )


def test_a_warning_repeated_on_every_batch_is_shown_once_and_counted(handler):
    from fkr_kedro.hooks.runlog import NODE_LINES, install

    repeats = RepeatedMessageFilter()
    install([repeats], NODE_LINES)
    try:
        for step in range(50):
            _batch(step)
        logging.getLogger("fkr_kedro.test").warning("the project's own warning")
        logging.getLogger("fkr_kedro.test").warning("the project's own warning")
    finally:
        handler.removeFilter(repeats)
    cast = [line for line in handler.lines if "inputs will be cast" in line]
    assert len(cast) == 2  # the Python warning and the logged one, once each
    assert any(line.startswith("UserWarning: inputs will be cast to float16 (batch 0) (test_run_log.py:") for line in cast)
    # The project's own messages are never folded.
    assert handler.lines.count("the project's own warning") == 2
    summary = repeats.summary()
    assert len(summary) == 2
    assert summary[0].startswith("49 more times: ")
    assert any("MatMul8bitLt: inputs will be cast from torch.float32" in line for line in summary)


def _double(x):
    return 2 * x


def test_each_node_logs_one_short_line(handler):
    from fkr_kedro.hooks.runlog import NODE_LINES, install

    nodes = NODE_LINES
    install([], nodes)
    pipeline = Pipeline([
        node(_double, "x", "y", name="first.double"),
        node(_double, "y", "z", name="second.double"),
    ])
    nodes.total = len(pipeline.nodes)
    catalog = DataCatalog()
    catalog["x"] = 1
    nodes.started = 0
    try:
        SequentialRunner().run(pipeline, catalog)
    finally:
        nodes.total = None
    node_lines = [line for line in handler.lines if "node" in line.lower() or "tasks" in line]
    assert node_lines == ["Running node 1/2: first.double", "Running node 2/2: second.double"]


RECALL = pd.DataFrame({
    "variant": ["fp", "fp", "fp", "a", "a", "b", "b"],
    "metric": ["one_hop.accuracy", "two_hop.held_out.accuracy", "two_hop.held_out.chance",
               "one_hop.accuracy", "two_hop.held_out.accuracy", "one_hop.accuracy", "two_hop.held_out.accuracy"],
    "relation": [None] * 7,
    "value": [0.5, 0.2, 0.1, 0.25, 0.2, 0.45, 0.1],
    "p_holm": [None, None, None, 0.01, 1.0, 0.5, 0.03],
})


def _summary_run(tmp_path, saved: list[str]) -> tuple[list[str], str, str]:
    """A RunSummaryHook around a run with an MLflow run open, that saved ``saved``; the lines
    it ends the run with."""
    import mlflow
    from kedro_datasets.pandas import CSVDataset
    from kedro_datasets.text import TextDataset

    catalog = DataCatalog({
        "recall_by_variant": CSVDataset(filepath=str(tmp_path / "recall_by_variant.csv")),
        "report_html": TextDataset(filepath=str(tmp_path / "report.html")),
        "scores": CSVDataset(filepath=str(tmp_path / "scores.csv")),
    })
    catalog.save("recall_by_variant", RECALL)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.set_experiment("summary")
    hook = RunSummaryHook()
    logger = logging.getLogger("fkr_kedro.hooks.runlog")
    lines = _Lines()
    logger.addHandler(lines)
    try:
        with mlflow.start_run():
            hook.before_pipeline_run({}, Pipeline([]), catalog)
            for name in saved:
                hook.after_dataset_saved(name)
            hook.after_pipeline_run({}, None, Pipeline([]), catalog)
    finally:
        logger.removeHandler(lines)
        for handler in logging.getLogger().handlers:
            handler.removeFilter(hook.repeats)
        mlflow.set_tracking_uri(None)
    return lines.lines, uri, experiment.experiment_id


def test_the_run_ends_with_its_findings_the_report_and_the_mlflow_command(tmp_path, monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)  # report.reference as configured: fp
    lines, uri, experiment_id = _summary_run(tmp_path, ["recall_by_variant", "report_html"])
    assert lines[0] == "one-hop recall: fp 50.0%; lowest a 25.0% (-25.0 points, Holm p 0.01)"
    assert lines[1] == "two-hop held-out (composition): fp 20.0% (chance 10.0%); lowest b 10.0% (-10.0 points, Holm p 0.03)"
    assert lines[-2] == f"Report: {tmp_path / 'report.html'}"
    assert lines[-1].startswith(f"MLflow: `mlflow ui --backend-store-uri {uri}`")
    assert f"#/experiments/{experiment_id}/runs" in lines[-1]


def test_a_run_without_a_report_names_what_it_wrote(tmp_path, monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)
    lines, _, _ = _summary_run(tmp_path, ["scores"])
    assert lines[0] == "This run wrote 1 output(s): scores. No report this run."
    assert not any(line.startswith(("Report:", "one-hop")) for line in lines)
    assert "mlflow ui --backend-store-uri" in lines[-1]


def test_an_output_without_a_catalog_entry_stops_the_run_before_it_starts(tmp_path):
    catalog = DataCatalog.from_config({
        "scores": {"type": "pandas.CSVDataset", "filepath": str(tmp_path / "scores.csv")},
        "{name}_png": {"type": "MemoryDataset"},  # declared to stay in memory
        "{variant}.table": {"type": "pandas.CSVDataset", "filepath": str(tmp_path / "{variant}.csv")},
    })
    pipeline = Pipeline([
        node(_double, "params:x", "scores", name="score"),
        node(_double, "scores", "summary", name="summarize"),  # summary: no entry
        node(_double, "scores", "figure_png", name="draw"),
        node(_double, "scores", "fp.table", name="tabulate"),
    ])
    assert unconfigured_outputs(pipeline, catalog) == ["summary"]
    with pytest.raises(UnconfiguredOutputError, match=r"summary\. Add an entry for each to conf/base/catalog\.yml"):
        check_outputs_configured(pipeline, catalog, "conf")
    # The hook checks before anything runs (and before the device check).
    with pytest.raises(UnconfiguredOutputError, match="summary"):
        ActiveConfigHook().before_pipeline_run({"env": "test"}, pipeline, catalog)
    # With the entry the run may start.
    catalog["summary"] = catalog.get("scores")
    check_outputs_configured(pipeline, catalog, "conf")
