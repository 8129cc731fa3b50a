"""Project hooks."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from .run_config import active_parameters, active_variants, set_active_config_loader

log = logging.getLogger(__name__)


class ActiveConfigHook:
    """Record the new context's config loader so generated pipelines follow ``--env``."""

    @hook_impl
    def after_context_created(self, context) -> None:
        set_active_config_loader(context.config_loader)


class MissingInputHook:
    """A pipeline input that does not exist yet stops the run with the pipeline that writes
    it (``probe_results does not exist yet ...: run `kedro run --pipeline=probe` first``),
    checked when the input is about to be loaded."""

    def __init__(self):
        self._catalog = None
        self._free_inputs: set[str] = set()

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        self._catalog = catalog
        self._free_inputs = {name for name in pipeline.inputs() if not name.startswith("params:")}

    @hook_impl
    def before_dataset_loaded(self, dataset_name: str, node) -> None:
        if self._catalog is None or dataset_name not in self._free_inputs or self._catalog.exists(dataset_name):
            return
        producer = _producing_pipeline(dataset_name)
        if producer is None:
            return  # a raw input: the dataset's own error says what is missing
        from kedro.io import DatasetError

        where = _dataset_filepath(self._catalog.get(dataset_name))
        raise DatasetError(
            f"{dataset_name} does not exist yet{f' ({where})' if where else ''}: the {producer!r} pipeline "
            f"writes it; run `kedro run --pipeline={producer}` first"
        )

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], run_result, pipeline, catalog) -> None:
        self._catalog = None

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline, catalog) -> None:
        self._catalog = None


def _producing_pipeline(dataset_name: str) -> str | None:
    """The first pipeline under ``pipelines/`` that outputs the dataset. Built here because
    ``kedro run --pipeline=NAME`` registers only the pipeline it runs."""
    import importlib
    import pkgutil

    from kedro.pipeline.transcoding import TRANSCODING_SEPARATOR

    from . import pipelines as package

    def base_name(name: str) -> str:  # "x@pandas" -> "x" (Kedro's transcoding)
        return name.split(TRANSCODING_SEPARATOR, 1)[0]

    base = base_name(dataset_name)
    for module in sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.ispkg):
        try:
            pipeline = importlib.import_module(f"{package.__name__}.{module}").create_pipeline()
        except Exception:  # a pipeline that cannot be built here (its own error shows when it runs)
            continue
        if base in {base_name(o) for o in pipeline.all_outputs()}:
            return module
    return None


class MlflowVariantHook:
    """Logs a ``kedro run`` into the MLflow run that kedro-mlflow opens for it (the parent
    run; kedro-mlflow marks it FAILED when the pipeline fails):

    * every parameter of the run, flattened (``training.steps``), on the parent run;

    * one nested run per variant, with its method, bits, group size, calibration size, model
      and dataset as params, opened when the run starts for every variant namespace in the
      pipeline (or when something is first logged for a variant);
    * a variant's flat dicts of numbers (``{variant}.recall_metrics``, ``{variant}.footprint``)
      as its metrics;
    * tidy per-layer tables (columns variant, layer, metric, value: ``probe_results`` ...)
      as metric histories with step = layer on each variant's run;
    * any other dataset named ``*_metrics`` that holds a flat dict of numbers as metrics of
      the parent run (``training_metrics``, ``scaling_fit_metrics``);
    * every file or folder a dataset writes under ``reporting_dir`` as an artifact of the
      parent run (and of the variant's run for a variant's dataset), when it is saved.

    Nested runs end FINISHED with the pipeline, or FAILED when it fails, keeping what they
    logged. Logging happens where the datasets are saved: the sequential and thread runners.
    """

    def __init__(self, reporting_dir: str = "data/08_reporting"):
        self._reporting_dir = reporting_dir
        self._runs = None
        self._catalog = None
        self._variants: set[str] = set()
        self._project_path = Path.cwd()

    @hook_impl
    def after_context_created(self, context) -> None:
        self._project_path = Path(context.project_path)

    @hook_impl(trylast=True)  # after kedro-mlflow has started the parent run
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        from .tracking import VariantRuns, flatten_params

        parent = mlflow.active_run()
        if parent is None:
            log.info("MLflow: no active run (tracking disabled for this pipeline); variants are not logged")
            self._runs = None
            return
        parameters = active_parameters()  # as configured (the catalog's are converted to node types)
        specs = active_variants()
        self._variants = {spec.name for spec in specs}
        source = _source_description(parameters)
        variant_params = {spec.name: {**_variant_params(spec), **source} for spec in specs}
        self._runs = VariantRuns(MlflowClient(mlflow.get_tracking_uri()), parent.info.run_id, variant_params)
        # Every parameter as configured, flattened: kedro-mlflow logs a node's parameters after
        # Kedro converted them to the node's types (`training` as "TrainConfig(...)").
        self._runs.log_params(flatten_params(parameters))
        self._catalog = catalog
        in_pipeline = {n.namespace.split(".")[0] for n in pipeline.nodes if n.namespace}
        for spec in specs:
            if spec.name in in_pipeline:
                self._runs.open(spec.name)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node) -> None:
        if self._runs is None:
            return
        from .tracking import flat_numbers, layer_histories

        base = dataset_name.split("@")[0]
        prefix, _, local = base.partition(".")
        variant = prefix if local and prefix in self._variants else None
        numbers = flat_numbers(data)
        if variant is not None and numbers is not None:
            self._runs.log_metrics(numbers, variant=variant)
        elif variant is None and _is_layer_table(data):
            curves = layer_histories(data, prefix=base.removesuffix("_results"), skip_metrics=_COUNTS)
            for name, variant_curves in curves.items():
                self._runs.log_histories(name, variant_curves)
        elif variant is None and base.endswith("_metrics") and numbers is not None:
            self._runs.log_metrics(numbers)
        self._log_reporting_files(dataset_name, variant)

    @hook_impl(tryfirst=True)  # before kedro-mlflow ends the parent run
    def after_pipeline_run(self, run_params: dict[str, Any], run_result, pipeline, catalog) -> None:
        self._finish(failed=False)

    @hook_impl(tryfirst=True)
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline, catalog) -> None:
        self._finish(failed=True)

    def _finish(self, failed: bool) -> None:
        if self._runs is not None:
            self._runs.finish(failed=failed)
        self._runs = None
        self._catalog = None

    def _log_reporting_files(self, dataset_name: str, variant: str | None) -> None:
        dataset = self._catalog.get(dataset_name) if self._catalog is not None else None
        filepath = _dataset_filepath(dataset)
        if filepath is None:
            return
        path = Path(filepath)
        if not path.is_absolute():
            path = self._project_path / path
        reporting = (self._project_path / self._reporting_dir).resolve()
        try:
            relative = path.resolve().relative_to(reporting)
        except ValueError:
            return  # not a report file
        if not path.exists():
            log.warning("MLflow: %s was saved but %s does not exist; not logged as an artifact", dataset_name, path)
            return
        # Artifacts keep their place under the reporting folder; a folder dataset keeps its name.
        parent = Path("reporting") / relative.parent
        artifact_path = str(parent / relative.name) if path.is_dir() else str(parent)
        self._runs.log_artifact(path, artifact_path)
        if variant is not None:
            self._runs.log_artifact(path, artifact_path, variant=variant)


# Counts that every per-layer table carries beside its curves (training and test sizes).
_COUNTS = ("n_train", "n_test", "n_classes", "n_chains")


def _is_layer_table(data: Any) -> bool:
    import pandas as pd

    return isinstance(data, pd.DataFrame) and {"variant", "layer", "metric", "value"} <= set(data.columns)


def _dataset_filepath(dataset) -> str | None:
    """Where a file-backed dataset writes, from its description (kedro-datasets and the
    project's datasets describe it as ``filepath`` or ``path``)."""
    if dataset is None:
        return None
    try:
        description = dataset._describe()
    except Exception:  # a dataset without a description has no file to log
        return None
    value = description.get("filepath") or description.get("path")
    return None if value is None else str(value)


def _variant_params(spec) -> dict[str, Any]:
    """Method, bits, group size and calibration size, the same keys for every variant so
    that MLflow's Compare lines them up; a setting the method does not read is ``None``
    (RTN and bitsandbytes take no calibration texts)."""
    from .quantization.methods import METHODS

    options = METHODS[spec.method].options
    return {
        "method": spec.method,
        "bits": spec.bits,
        "group_size": spec.group_size,
        "calibration_size": spec.calibration_size if "calibration_size" in options else None,
        "sym": spec.sym if "sym" in options else None,
        "desc_act": spec.desc_act if "desc_act" in options else None,
    }


def _source_description(parameters: dict[str, Any]) -> dict[str, str]:
    """The model and the dataset every variant derives from, as short params, from
    ``base_model`` (parameters_train.yml) and ``knowledge`` (parameters_data_prep.yml)."""
    from .reporting.describe import describe_dataset, describe_model

    return {
        "model": describe_model(parameters.get("base_model"), parameters.get("model_shape")),
        "dataset": describe_dataset(parameters.get("knowledge"), parameters.get("world")),
    }
