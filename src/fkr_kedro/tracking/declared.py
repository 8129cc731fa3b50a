"""What a dataset's catalog entry declares to be tracked, and logging a saved dataset by it.

A catalog entry opts in with ``metadata: {fkr_tracking: ...}``; nothing is inferred from
dataset names, column sets or file locations, so renaming or moving a dataset keeps (or
visibly breaks) its tracking. The declaration is one of:

* a kind: ``metric`` (a flat dict of numbers: metrics of the variant's run for a dataset in a
  variant namespace, else of the pipeline run) or ``artifact`` (the file or folder the dataset
  writes, at the root of the run's artifacts);
* a list of kinds: ``[metric, artifact]``;
* a mapping of kinds to options::

      fkr_tracking:
        metric: true                    # as above
        per_layer_curve: probe          # tidy table (variant, layer, metric, value, ...) as
                                        # metric histories probe.<...>, step = layer
        artifact: reporting/figures     # the file, under this artifact folder
        report: true                    # an artifact the runs' descriptions point to

Knows nothing of Kedro: ``fkr_kedro.hooks`` hands it the entry's ``metadata``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .mlflow_runs import VariantRuns, flat_numbers, layer_histories

TRACKING_KEY = "fkr_tracking"
KINDS = ("metric", "per_layer_curve", "artifact", "report")
# Counts that every per-layer table carries beside its curves (training and test sizes).
LAYER_TABLE_COUNTS = ("n_train", "n_test", "n_classes", "n_chains")
_LAYER_COLUMNS = ("variant", "layer", "metric", "value")


class TrackingDeclarationError(ValueError):
    """A catalog entry's ``fkr_tracking`` declaration is malformed or does not fit its data."""


@dataclass(frozen=True)
class Declaration:
    """What to log when ``dataset`` is saved."""

    dataset: str
    metric: bool = False
    curve_prefix: str | None = None  # per_layer_curve: the histories' name prefix
    artifact_path: str | None = None  # artifact: the folder within the run's artifacts ("" = root)
    report: bool = False  # the artifact is the report the run descriptions point to

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(
            kind
            for kind, on in (
                ("metric", self.metric),
                ("per_layer_curve", self.curve_prefix is not None),
                ("artifact", self.artifact_path is not None),
                ("report", self.report),
            )
            if on
        )


def parse_declaration(dataset: str, metadata: Mapping[str, Any] | None) -> Declaration | None:
    """The tracking declared in a catalog entry's ``metadata``; None when it declares none."""
    if not metadata or TRACKING_KEY not in metadata:
        return None
    spec = metadata[TRACKING_KEY]
    where = f"catalog entry {dataset!r}: metadata.{TRACKING_KEY}"
    if isinstance(spec, str):
        spec = [spec]
    if isinstance(spec, list | tuple):
        unknown = [k for k in spec if k not in KINDS]
        if unknown:
            raise TrackingDeclarationError(f"{where} has unknown kind(s) {unknown}; the kinds are {list(KINDS)}")
        if "per_layer_curve" in spec:
            raise TrackingDeclarationError(
                f"{where}: per_layer_curve needs the histories' name prefix, e.g. `{TRACKING_KEY}: {{per_layer_curve: probe}}`"
            )
        spec = {kind: True for kind in spec}
    if not isinstance(spec, Mapping):
        raise TrackingDeclarationError(
            f"{where} must be a kind, a list of kinds or a mapping of kinds to options (kinds: {list(KINDS)}); got {spec!r}"
        )
    unknown = [k for k in spec if k not in KINDS]
    if unknown:
        raise TrackingDeclarationError(f"{where} has unknown kind(s) {unknown}; the kinds are {list(KINDS)}")

    def flag(kind: str) -> bool:
        value = spec.get(kind, False)
        if not isinstance(value, bool):
            raise TrackingDeclarationError(f"{where}.{kind} is true or false; got {value!r}")
        return value

    prefix = spec.get("per_layer_curve")
    if prefix is not None and (not isinstance(prefix, str) or not prefix):
        raise TrackingDeclarationError(f"{where}.per_layer_curve is the histories' name prefix (e.g. probe); got {prefix!r}")
    artifact = spec.get("artifact")
    if artifact is True:
        artifact = ""
    elif artifact is False:
        artifact = None
    elif artifact is not None and not isinstance(artifact, str):
        raise TrackingDeclarationError(f"{where}.artifact is true or an artifact folder (e.g. reporting); got {artifact!r}")
    report = flag("report")
    if report and artifact is None:
        artifact = ""  # a report is an artifact
    return Declaration(
        dataset=dataset,
        metric=flag("metric"),
        curve_prefix=prefix,
        artifact_path=None if artifact is None else artifact.strip("/"),
        report=report,
    )


def check_declarations(declarations: Iterable[Declaration], filepaths: Mapping[str, str | None]) -> None:
    """Before a run: every artifact declaration names a dataset that writes a file or folder."""
    missing = [d.dataset for d in declarations if d.artifact_path is not None and not filepaths.get(d.dataset)]
    if missing:
        raise TrackingDeclarationError(
            f"catalog entries {missing} declare `{TRACKING_KEY}: artifact` but have no `filepath` or `path`: "
            "only a dataset that writes a file or folder can be an artifact; remove the declaration"
        )


def artifact_location(declaration: Declaration, path: Path) -> tuple[str, str | None]:
    """``(folder, file)`` of a saved file among the run's artifacts; a folder dataset keeps its name."""
    folder = declaration.artifact_path or ""
    if path.is_dir():
        folder = f"{folder}/{path.name}".strip("/")
        return folder, None
    return folder, path.name


def log_saved(
    runs: VariantRuns,
    declaration: Declaration,
    data: Any,
    variant: str | None,
    path: Path | None,
    prefix: str | None = None,
) -> None:
    """Log what ``declaration`` declares for the data just saved: ``variant`` is the variant
    namespace the dataset lives in (None outside one), ``path`` where it wrote (absolute);
    ``prefix`` (a further training seed's namespace) goes before the metric keys and artifact
    folders logged on the parent run, so two seeds' tables never overwrite each other."""
    name = declaration.dataset
    if declaration.metric:
        numbers = flat_numbers(data)
        if numbers is None:
            raise TrackingDeclarationError(
                f"{name} is declared `{TRACKING_KEY}: metric` in the catalog, but the data saved is "
                f"{_describe(data)}, not a flat dict of numbers: fix the node's output or the entry's metadata"
            )
        if prefix:
            numbers = {f"{prefix}.{key}": value for key, value in numbers.items()}
        runs.log_metrics(numbers, variant=variant)
    if declaration.curve_prefix is not None:
        if not isinstance(data, pd.DataFrame) or not set(_LAYER_COLUMNS) <= set(data.columns):
            raise TrackingDeclarationError(
                f"{name} is declared `{TRACKING_KEY}: {{per_layer_curve: {declaration.curve_prefix}}}` in the "
                f"catalog, but the data saved is {_describe(data)}, not a tidy table with the columns "
                f"{list(_LAYER_COLUMNS)}: fix the node's output or the entry's metadata"
            )
        curves = layer_histories(data, prefix=declaration.curve_prefix, skip_metrics=LAYER_TABLE_COUNTS)
        for table_variant, variant_curves in curves.items():
            runs.log_histories(f"{prefix}.{table_variant}" if prefix else table_variant, variant_curves)
    if declaration.artifact_path is not None:
        if path is None or not path.exists():
            raise TrackingDeclarationError(
                f"{name} is declared `{TRACKING_KEY}: artifact` in the catalog and was saved, but nothing exists "
                f"at {path}: a versioned or remote dataset cannot be logged this way; remove the declaration"
            )
        folder, _ = artifact_location(declaration, path)
        if prefix:
            folder = f"{prefix}/{folder}".rstrip("/")
        runs.log_artifact(path, folder or None)
        if variant is not None:
            runs.log_artifact(path, folder or None, variant=variant)


def _describe(data: Any) -> str:
    if isinstance(data, pd.DataFrame):
        return f"a table with the columns {list(data.columns)}"
    if isinstance(data, Mapping):
        kinds = sorted({type(v).__name__ for v in data.values()})
        return f"a dict of {', '.join(kinds) or 'nothing'}"
    return f"a {type(data).__name__}"
