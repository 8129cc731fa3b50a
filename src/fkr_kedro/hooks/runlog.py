"""A run that speaks briefly: a library message that repeats (bitsandbytes warns on every
batch) is shown once and counted, each node logs one line, import-time noise of libraries
that does not concern a CPU run is dropped, and the run ends with what it found, where the
report is and how to open the study in MLflow (:class:`RunSummaryHook`).

conf/logging.yml gives one line per record (no wrapping); its filters cannot name this
module (Kedro accepts logging classes from allowlisted modules only), so the hook attaches
them to the root handlers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

log = logging.getLogger(__name__)

# Loggers whose messages below ERROR are noise in this project: torchao's optional CUDA
# kernels and Triton absent on CPU, and torch's note on torchao's pytree registrations.
QUIET_LOGGERS = ("torchao", "torch.utils._pytree")
# GPTQModel's logger (LogBar, which sets itself to INFO when GPTQModel is imported): its
# per-layer tables and model-loading notes, hundreds of lines a variant; warnings stay.
LOGBAR = "logbar"
# The project's and Kedro's own messages are never folded: each says something different.
NEVER_FOLDED = ("fkr_kedro", "kedro")


def quiet_library_loggers() -> None:
    """Raise the quiet loggers to ERROR (before the libraries are imported)."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def quiet_gptqmodel() -> None:
    """GPTQModel's logger to WARNING. LogBar sets its shared logger to INFO when it first
    makes it (on GPTQModel's import, inside a node), so it is made here first."""
    import importlib.util

    if importlib.util.find_spec(LOGBAR) is None:
        return
    from logbar import LogBar

    LogBar.shared().setLevel(logging.WARNING)


class RepeatedMessageFilter(logging.Filter):
    """Lets a library's warning through the first time and counts its repeats (by logger and
    message template, so `inputs will be cast from %s` counts once whatever the dtype; a
    Python warning by its text). :meth:`summary` names what was held back."""

    def __init__(self, level: int = logging.WARNING):
        super().__init__()
        self.level = level
        self.counts: dict[tuple[str, str], int] = {}
        self.first: dict[tuple[str, str], str] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        decided = getattr(record, "fkr_shown", None)
        if decided is not None:  # seen by another handler of the root logger
            return decided
        record.fkr_shown = self._decide(record)
        return record.fkr_shown

    def _decide(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level or record.levelno >= logging.ERROR or record.name.startswith(NEVER_FOLDED):
            return True
        if record.name == "py.warnings":
            template, where = _compact_warning(record.getMessage())
            record.msg, record.args = f"{template} ({where})" if where else template, ()
        else:
            template = str(record.msg)
        key = (record.name, template)
        self.counts[key] = self.counts.get(key, 0) + 1
        if self.counts[key] == 1:
            self.first[key] = record.getMessage()
            return True
        return False

    def summary(self) -> list[str]:
        """One line per message held back: how often it came, and its first words."""
        lines = []
        for key, count in sorted(self.counts.items(), key=lambda item: -item[1]):
            if count > 1:
                text = " ".join(self.first[key].split())
                lines.append(f"{count - 1} more times: {text[:110]}{'...' if len(text) > 110 else ''}")
        return lines

    def reset(self) -> None:
        self.counts.clear()
        self.first.clear()


def _compact_warning(text: str) -> tuple[str, str]:
    """``(Category: message, file:line)`` of a warning as ``warnings.formatwarning`` writes it
    (``path:line: Category: message`` then the source line, indented), on one line."""
    import re

    lines = text.rstrip("\n").split("\n")
    if len(lines) > 1 and lines[-1].startswith("  "):
        lines = lines[:-1]  # the source line that warned
    head = re.match(r"(?P<path>.*?):(?P<line>\d+): (?P<rest>.*)", lines[0])
    if head is None:
        return " ".join(text.split()), ""
    message = " ".join(" ".join([head["rest"], *lines[1:]]).split())
    return message, f"{head['path'].rsplit('/', 1)[-1]}:{head['line']}"


class NodeLineFilter(logging.Filter):
    """One line per node: Kedro's ``Running node: name: func([inputs...]) -> [outputs...]``
    becomes ``Running node 3/52: name``, and the runner's two completion lines go (the next
    node's line, or the end of the run, says it completed)."""

    COMPLETED = ("Completed node: %s", "Completed %d out of %d tasks")

    def __init__(self):
        super().__init__()
        self.total: int | None = None
        self.started = 0
        self.current: str | None = None  # the node about to run (its name with its namespace)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg in self.COMPLETED:
            return False
        if record.msg == "Running node: %s" and record.args and not getattr(record, "fkr_short", False):
            record.fkr_short = True
            self.started += 1
            text = str(record.args[0] if isinstance(record.args, tuple) else record.args)
            name = self.current or (text.split(": ", 1)[0] if ": " in text else text.split("(", 1)[0])
            where = f" {self.started}/{self.total}" if self.total else ""
            record.msg, record.args = f"Running node{where}: %s", (name,)
        return True


# One of each per process, whatever the number of hooks and sessions: a record passes each once.
REPEATS = RepeatedMessageFilter()
NODE_LINES = NodeLineFilter()


def install(handler_filters: list[logging.Filter], node_filter: NodeLineFilter) -> None:
    """Attach the filters to every handler of the root logger (once each), and the node
    filter to the loggers that write node lines. Python's warnings go through logging (as
    Kedro's Rich handler has them), so that they are folded too."""
    logging.captureWarnings(True)
    for handler in logging.getLogger().handlers:
        for item in handler_filters:
            if item not in handler.filters:
                handler.addFilter(item)
    for name in ("kedro.pipeline.node", "kedro.runner.sequential_runner", "kedro.runner.runner",
                 "kedro.runner.thread_runner", "kedro.runner.parallel_runner"):
        logger = logging.getLogger(name)
        if node_filter not in logger.filters:
            logger.addFilter(node_filter)


class RunSummaryHook:
    """Keeps the run's log short (:class:`RepeatedMessageFilter`, :class:`NodeLineFilter`)
    and ends it with a summary: the headline figures of the recall table
    (:func:`fkr_kedro.tracking.headline_lines`), the report's path and the command that opens
    the study in MLflow. A run that wrote no report names the outputs it wrote instead."""

    REPORT = "report_html"
    RECALL = "recall_by_variant"
    SEEDS = "seed_summary"  # several training seeds: their changes across seeds

    def __init__(self):
        self.repeats = REPEATS
        self.nodes = NODE_LINES
        self._saved: set[str] = set()
        self._catalog = None
        self._mlflow: tuple[str, str | None] | None = None
        self._project = Path.cwd()
        install([self.repeats], self.nodes)

    @hook_impl
    def after_context_created(self, context) -> None:
        install([self.repeats], self.nodes)  # handlers made since this hook was
        self._project = Path(context.project_path)

    @hook_impl(trylast=True)  # after kedro-mlflow has opened the run
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        install([self.repeats], self.nodes)
        try:
            quiet_gptqmodel()
        except Exception as error:  # noqa: BLE001 - a louder log, not a failed run
            log.debug("GPTQModel's log left as it is: %s", error)
        self.nodes.total, self.nodes.started = len(pipeline.nodes), 0
        self.repeats.reset()  # the summary counts this run's repeats (a notebook runs many)
        self._saved, self._catalog = set(), catalog
        self._mlflow = None
        try:
            import mlflow

            active = mlflow.active_run()
            if active is not None:
                from ..kedro_config import absolute_uri

                self._mlflow = (absolute_uri(mlflow.get_tracking_uri(), self._project), active.info.experiment_id)
        except Exception as error:  # noqa: BLE001 - no MLflow: the summary leaves it out
            log.debug("no MLflow run for the summary: %s", error)

    @hook_impl
    def before_node_run(self, node) -> None:
        self.nodes.current = node.name

    @hook_impl
    def after_dataset_saved(self, dataset_name: str) -> None:
        self._saved.add(dataset_name)

    @hook_impl(trylast=True)
    def after_pipeline_run(self, run_params: dict[str, Any], run_result, pipeline, catalog) -> None:
        try:
            lines = self.summary_lines()
        except Exception as error:  # noqa: BLE001 - never fail a finished run over its summary
            log.debug("run summary skipped: %s", error)
            lines = []
        for line in lines:
            log.info(line)
        self._end()

    @hook_impl(trylast=True)
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline, catalog) -> None:
        for line in self.repeats.summary():
            log.info("(repeated) %s", line)
        self._end()

    def _end(self) -> None:
        self.repeats.reset()
        self.nodes.total, self.nodes.current, self._catalog = None, None, None

    def summary_lines(self) -> list[str]:
        """The summary's lines (the repeated messages held back first)."""
        from ..kedro_config import catalog_filepath, persisted
        from ..tracking import headline_lines, mlflow_ui_command, written_lines

        lines = [f"(repeated) {line}" for line in self.repeats.summary()]
        catalog = self._catalog
        if catalog is not None and self.REPORT in self._saved:
            if self.RECALL in catalog and catalog.exists(self.RECALL):
                lines += headline_lines(catalog.load(self.RECALL), _reference())
            if self.SEEDS in self._saved:
                from ..reporting.findings import seed_headline

                lines += seed_headline(catalog.load(self.SEEDS))
            lines.append(f"Report: {catalog_filepath(catalog, self.REPORT)}")
        elif catalog is not None:
            lines.append(written_lines(n for n in self._saved if persisted(catalog, n)) + " No report this run.")
        if self._mlflow is not None:
            lines.append(mlflow_ui_command(*self._mlflow))
        return lines


def _reference() -> str:
    from ..run_config import study_parameters

    return study_parameters().report.reference


quiet_library_loggers()
