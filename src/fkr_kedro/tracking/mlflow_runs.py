"""Nested MLflow runs per variant, flat metric dicts and per-layer metric histories.

Every call names its run by id through an ``MlflowClient``: the fluent API keeps one stack
of active runs per thread, while a pipeline saves datasets from any thread and logs to
several runs at once (the pipeline run and one run per variant).
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Iterable, Mapping
from numbers import Real
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

# MLflow's tag for a run's description (shown and edited in the UI as markdown).
NOTE_TAG = "mlflow.note.content"
# MLflow 3's experiment kind: the UI opens a "custom model development" experiment on its runs
# table, not on the GenAI overview (traces, evaluations) it shows for an experiment of no kind.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
CUSTOM_MODEL_DEVELOPMENT = "custom_model_development"

# Why a run ended FAILED: the exception (type: message) or the Slurm state of its job.
FAILURE_TAG = "fkr.failure"
_TAG_LIMIT = 5000  # MLflow's limit on a tag's value is 8000 characters
# The tags kedro-mlflow sets from ``kedro run``'s arguments: one job's, not the study's. A job of
# `kedro submit` moves them from the study's parent run to its own nested runs.
JOB_SCOPED_TAGS = ("namespaces", "node_names", "from_nodes", "to_nodes", "from_inputs", "to_outputs", "tags",
                   "load_versions", "only_missing_outputs", "runner", "is_async", "kedro_command")

log = logging.getLogger(__name__)

# MLflow's own batch limits (mlflow.utils.validation).
_METRICS_PER_BATCH = 1000
_PARAMS_PER_BATCH = 100
# Columns of the tidy per-layer tables that are not part of a curve's name.
_TIDY_COLUMNS = ("variant", "layer", "metric", "value")
# Columns that qualify a row's value (its interval and its paired test against the reference,
# fkr_kedro.analysis.statistics; why a value is missing), not what it measures: never part of
# a curve's key.
# ``stderr`` becomes a curve of its own, ``<key>_stderr``, as lm-evaluation-harness logs it.
_STATISTICS_COLUMNS = ("n", "stderr", "ci_low", "ci_high", "delta", "delta_ci_low", "delta_ci_high", "p_value",
                       "p_holm", "gained", "lost", "change", "test", "reason")


def metric_key(name: str) -> str:
    """``name`` as a valid MLflow metric key: ``two_hop.seen.r2(r1(e1)).accuracy`` becomes
    ``two_hop.seen.r2_r1_e1.accuracy`` (MLflow accepts letters, digits, ``_ - . / : ``)."""
    key = name.replace("(", "_").replace(")", "")
    return re.sub(r"[^/\w.\- :]", "_", key)


def flat_numbers(data: Any) -> dict[str, float] | None:
    """A dict of numbers as ``{metric key: float}``; None for anything else (nested dicts,
    strings, tables), which is not a set of metrics."""
    if not isinstance(data, Mapping) or not data:
        return None
    if not all(isinstance(v, Real) for v in data.values()):
        return None
    return {metric_key(str(k)): float(v) for k, v in data.items()}


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested parameters as ``{"training.steps": "300", ...}`` (lists and scalars as text),
    the way kedro-mlflow flattens the dict parameters it logs."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, prefix=f"{name}."))
        else:
            out[name] = str(value)
    return out


def study_params(parameters: Mapping[str, Any]) -> dict[str, str]:
    """The parameters logged on a study's parent run: every parameter flattened but the
    variants' own settings (``variants.<name>.*``), which each variant's nested run logs. A
    resubmission that changes only a variant keeps the study's run; MLflow refuses to change a
    logged param, so a changed study parameter makes a new study run (``changed_params``)."""
    return {k: v for k, v in flatten_params(parameters).items() if not k.startswith("variants.")}


def changed_params(logged: Mapping[str, str], wanted: Mapping[str, str]) -> list[str]:
    """The keys logged on a run whose value differs from the one wanted (MLflow would refuse
    to log it): ``key (old -> new)``."""
    return [f"{k} ({logged[k]} -> {v})" for k, v in sorted(wanted.items()) if k in logged and logged[k] != str(v)]


def job_scoped_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    """The tags of ``tags`` that describe one ``kedro run`` (its namespaces, nodes, command)."""
    return {k: str(v) for k, v in tags.items() if k in JOB_SCOPED_TAGS}


def take_job_tags(client: MlflowClient, run_id: str) -> dict[str, str]:
    """Remove this job's own tags (:data:`JOB_SCOPED_TAGS`) from the study's run and return
    them (for the job's nested runs). Jobs run side by side: a tag another job removed first
    is no error."""
    from mlflow.exceptions import MlflowException

    moved = job_scoped_tags(client.get_run(run_id).data.tags)
    for key in moved:
        try:
            client.delete_tag(run_id, key)
        except MlflowException:
            pass  # removed by a job running beside this one
    return moved


def failure_reason(error: BaseException) -> str:
    """``Type: message`` of an exception, as a tag value; a wrapped one names the error it
    wraps (``DatasetError (from ValueError): ...``: Kedro wraps a dataset's own error)."""
    root, seen = error, set()
    while (root.__cause__ or root.__context__) is not None and id(root) not in seen:
        seen.add(id(root))
        root = root.__cause__ or root.__context__
    kind = type(error).__name__ + (f" (from {type(root).__name__})" if root is not error else "")
    return f"{kind}: {error}"[:_TAG_LIMIT]


def layer_histories(
    table: pd.DataFrame, prefix: str, skip_metrics: Iterable[str] = ()
) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Per variant, one curve per metric of a tidy per-layer table (columns ``variant``,
    ``layer``, ``metric``, ``value`` and any descriptive columns such as ``probe``, ``site``
    or ``split``): ``{variant: {key: [(layer, value), ...]}}``, the key being the prefix,
    the descriptive columns' values and the metric (``probe.bridge.transfer_accuracy``)."""
    missing = [c for c in _TIDY_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{prefix}: a per-layer table needs the columns {list(_TIDY_COLUMNS)}; {missing} missing")
    extra = [c for c in table.columns if c not in _TIDY_COLUMNS and c not in _STATISTICS_COLUMNS]
    skip = set(skip_metrics)
    out: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for row in table.to_dict("records"):
        if row["metric"] in skip:
            continue
        parts = [prefix] + [str(row[c]) for c in extra if not _missing(row[c])] + [str(row["metric"])]
        curves = out.setdefault(str(row["variant"]), {})
        key = ".".join(parts)
        curves.setdefault(metric_key(key), []).append((int(row["layer"]), float(row["value"])))
        if not _missing(row.get("stderr")):
            curves.setdefault(metric_key(f"{key}_stderr"), []).append((int(row["layer"]), float(row["stderr"])))
    for curves in out.values():
        for points in curves.values():
            points.sort()
    return out


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def study_run_name(env: str, pipelines: Iterable[str], model: str, source: str, n_variants: int) -> str:
    """The pipeline run's name: what was studied, as a user looks for it in the runs table
    (``test: llama trained from scratch (2 layers, width 64) on synthetic world (seed 0, 200
    people), 5 variants``); a run of other pipelines than the default one names them first."""
    names = [p for p in pipelines if p != "__default__"]
    what = f"{'+'.join(names)} " if names else ""
    plural = "variant" if n_variants == 1 else "variants"
    return f"{what}{env}: {model} on {source}, {n_variants} {plural}"[:250]


def set_tags(client: MlflowClient, run_id: str, tags: Mapping[str, Any]) -> None:
    """Tags on a run in one request (values as text; None is left out)."""
    items = [RunTag(str(k), str(v)) for k, v in tags.items() if v is not None]
    if items:
        client.log_batch(run_id, tags=items)


def runs_table_link(experiment_id: str, flat: bool = False) -> str:
    """The UI's address (after the server's) of the experiment's runs table. MLflow 3.17's UI
    picks its GenAI or model-training layout from a per-browser toggle (default GenAI), not
    from the experiment's kind tag; ``workflowType`` in the address picks model training.
    Sorted by date (the default), nested runs fold under their study run; ``flat`` sorts by
    name, which lists them beside it."""
    link = f"#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    return f"{link}&orderByKey=attributes.run_name&orderByAsc=true" if flat else link


def set_experiment_kind(client: MlflowClient, experiment_id: str, kind: str = CUSTOM_MODEL_DEVELOPMENT) -> None:
    """Tag the experiment with its kind, and describe it with a link to its runs table,
    unless it has them (a kind or description chosen in the UI stays)."""
    experiment = client.get_experiment(experiment_id)
    if not experiment.tags.get(EXPERIMENT_KIND_TAG):
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, kind)
    if not experiment.tags.get(NOTE_TAG):
        client.set_experiment_tag(
            experiment_id, NOTE_TAG,
            f"Quantization and factual knowledge: one run per `kedro run`, one nested run per variant. "
            f"[Runs table]({runs_table_link(experiment_id)}) (a study's variants fold under it), "
            f"[variant runs listed]({runs_table_link(experiment_id, flat=True)}).",
        )


class VariantRuns:
    """One nested run per variant under ``parent_run_id``, created the first time something
    is logged for the variant (or by :meth:`open`) with ``variant_params`` as its params and
    ``variant_tags`` (plus ``run_tags``, given to every nested run) as its tags."""

    def __init__(
        self,
        client: MlflowClient,
        parent_run_id: str,
        variant_params: Mapping[str, Mapping[str, Any]] | None = None,
        variant_tags: Mapping[str, Mapping[str, Any]] | None = None,
        run_tags: Mapping[str, str] | None = None,
    ):
        self.client = client
        self.parent_run_id = parent_run_id
        self.experiment_id = client.get_run(parent_run_id).info.experiment_id
        self._params = {name: dict(params) for name, params in (variant_params or {}).items()}
        self._tags = {name: {k: str(v) for k, v in tags.items()} for name, tags in (variant_tags or {}).items()}
        self._run_tags = dict(run_tags or {})
        self._run_ids: dict[str, str] = {}
        self._ended: set[str] = set()
        self._lock = threading.Lock()

    @property
    def run_ids(self) -> dict[str, str]:
        return dict(self._run_ids)

    def open(self, variant: str) -> str:
        """The variant's nested run id, created (with its params) if it does not exist yet."""
        with self._lock:
            if variant in self._run_ids:
                return self._run_ids[variant]
            tags = {
                **self._run_tags,
                **self._tags.get(variant, {}),
                MLFLOW_PARENT_RUN_ID: self.parent_run_id,
                MLFLOW_RUN_NAME: variant,
                "variant": variant,
            }
            run = self.client.create_run(self.experiment_id, tags=tags, run_name=variant)
            run_id = run.info.run_id
            self._run_ids[variant] = run_id
        params = {"variant": variant, **self._params.get(variant, {})}
        self._log_params(run_id, params)
        log.debug("MLflow: nested run %s for variant %s", run_id, variant)  # the parent's line counts them
        return run_id

    def adopt(self, variant: str, run_id: str) -> None:
        """Log the variant into the existing run ``run_id`` (a job of a submitted study that
        writes a variant's figures after its own job ended it): never created nor ended here."""
        with self._lock:
            self._run_ids[variant] = run_id
            self._ended.add(run_id)

    def log_params(self, params: Mapping[str, Any], variant: str | None = None) -> None:
        """Params on the variant's run, or on the parent run when ``variant`` is None."""
        self._log_params(self.open(variant) if variant is not None else self.parent_run_id, params)

    def log_metrics(self, metrics: Mapping[str, float], variant: str | None = None, step: int = 0) -> None:
        """Metrics on the variant's run, or on the parent run when ``variant`` is None."""
        run_id = self.open(variant) if variant is not None else self.parent_run_id
        now = _now_ms()
        self._log_metric_batch(run_id, [Metric(metric_key(k), float(v), now, step) for k, v in metrics.items()])

    def log_histories(self, variant: str, curves: Mapping[str, Iterable[tuple[int, float]]]) -> None:
        """Metric histories on the variant's run: each curve's points logged with step = layer."""
        run_id = self.open(variant)
        now = _now_ms()
        metrics = [Metric(key, value, now, step) for key, points in curves.items() for step, value in points]
        self._log_metric_batch(run_id, metrics)

    def log_artifact(self, path: Path, artifact_path: str | None = None, variant: str | None = None) -> None:
        """A file or a folder (its files) on the variant's run, or on the parent run."""
        run_id = self.open(variant) if variant is not None else self.parent_run_id
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path)
        elif path.is_file():
            self.client.log_artifact(run_id, str(path), artifact_path)
        else:
            raise FileNotFoundError(f"no file or folder at {path} to log as an artifact")

    def set_note(self, text: str, variant: str | None = None) -> None:
        """The run's description (markdown): on the variant's run, or the parent run."""
        run_id = self.open(variant) if variant is not None else self.parent_run_id
        self.client.set_tag(run_id, NOTE_TAG, text)

    def finish(self, status: str = "FINISHED", reason: str | None = None) -> None:
        """End every nested run still open with ``status`` (FINISHED, FAILED or KILLED), with
        ``reason`` (why it failed) as its ``fkr.failure`` tag; what each logged so far stays. A
        run ended once is not ended again."""
        RunStatus.from_string(status)  # a valid status name
        with self._lock:
            open_runs = {v: r for v, r in self._run_ids.items() if r not in self._ended}
            self._ended.update(open_runs.values())
        for variant, run_id in open_runs.items():
            if reason and status != "FINISHED":
                self.client.set_tag(run_id, FAILURE_TAG, reason[:_TAG_LIMIT])
            self.client.set_terminated(run_id, status)
        if open_runs:  # one line for all of them: a study has tens of variants
            log.info("MLflow: %d nested run(s) ended %s: %s", len(open_runs), status, ", ".join(open_runs))

    def _log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        items = [Param(str(k), "None" if v is None else str(v)) for k, v in params.items()]
        for start in range(0, len(items), _PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[start : start + _PARAMS_PER_BATCH])

    def _log_metric_batch(self, run_id: str, metrics: list[Metric]) -> None:
        for start in range(0, len(metrics), _METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=metrics[start : start + _METRICS_PER_BATCH])


def _now_ms() -> int:
    return int(time.time() * 1000)
