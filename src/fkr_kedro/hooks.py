"""Project hooks."""

from __future__ import annotations

import logging
import os
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

    from kedro.pipeline.transcoding import _strip_transcoding

    from . import pipelines as package

    base = _strip_transcoding(dataset_name)
    for module in sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.ispkg):
        try:
            pipeline = importlib.import_module(f"{package.__name__}.{module}").create_pipeline()
        except Exception:  # a pipeline that cannot be built here (its own error shows when it runs)
            continue
        if base in {_strip_transcoding(o) for o in pipeline.all_outputs()}:
            return module
    return None


class MlflowVariantHook:
    """Logs a ``kedro run`` into the MLflow run that kedro-mlflow opens for it (the pipeline
    run, named here by the study: env, model, knowledge source, number of variants), with one
    nested run per variant (its method, bits, group size, model and knowledge source as params
    and tags) and what each catalog entry declares in ``metadata: {fkr_tracking: ...}``
    (``fkr_kedro.tracking.declared``): metrics, per-layer curves, artifacts, the report.

    Before MLflow opens anything it checks the ``--env`` folder, the project's SQLite store
    and where its experiment keeps artifacts (``fkr_kedro.tracking.store``). Runs end
    FINISHED, FAILED on an error, KILLED on SIGTERM/SIGINT; a run left RUNNING by a process
    that no longer exists is marked KILLED by the next run (``fkr_kedro.tracking.run_state``).
    Logging happens where datasets are saved: the sequential and thread runners.
    """

    def __init__(self):
        self._runs = None
        self._catalog = None
        self._variants: set[str] = set()
        self._declarations: dict = {}
        self._parent_run_id: str | None = None
        self._guard = None
        self._project_path = Path.cwd()

    @hook_impl(tryfirst=True)  # before kedro-mlflow reads mlflow.yml and opens the store
    def after_context_created(self, context) -> None:
        from .tracking import check_env, check_sqlite_store, sqlite_path

        self._project_path = Path(context.project_path)
        loader = context.config_loader
        if context.env:  # `--env` or KEDRO_ENV; the default env may be absent
            check_env(Path(loader.conf_source), context.env)
        mlflow_conf = _mlflow_conf(loader)
        uri = (mlflow_conf.get("server") or {}).get("mlflow_tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
        database = sqlite_path(uri, Path.cwd())
        if database is None:
            return
        # MLflow's default artifact root beside a SQLite store is ./mlruns.
        check_sqlite_store(database, artifact_root=Path.cwd() / "mlruns")
        if database.exists():
            _check_experiment_artifacts(uri, database, _experiment_name(mlflow_conf), Path(context.project_path))

    @hook_impl(trylast=True)  # after kedro-mlflow has started the parent run
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        import mlflow

        parent = mlflow.active_run()
        if parent is None:
            log.info("MLflow: no active run (tracking disabled for this pipeline); variants are not logged")
            self._runs = None
            return
        from .tracking import RunGuard

        self._parent_run_id = parent.info.run_id
        self._guard = RunGuard(self._end_open_runs)
        self._guard.install()
        try:
            self._start(run_params, pipeline, catalog, parent)
        except BaseException as error:  # outside Kedro's try: nobody else ends the runs
            self._end_open_runs("FAILED", f"error while starting the tracked run: {error}")
            raise

    def _start(self, run_params: dict[str, Any], pipeline, catalog, parent) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        from .tracking import (
            VariantRuns,
            check_declarations,
            end_stale_runs,
            flatten_params,
            process_tags,
            runs_table_link,
            set_experiment_kind,
            set_tags,
            study_run_name,
        )

        client = MlflowClient(mlflow.get_tracking_uri())
        run_id, experiment_id = parent.info.run_id, parent.info.experiment_id
        tags = process_tags()
        set_tags(client, run_id, tags)
        end_stale_runs(client, [experiment_id])
        set_experiment_kind(client, experiment_id)
        uri = mlflow.get_tracking_uri()
        where = uri if uri.startswith(("http://", "https://")) else f"`mlflow ui --backend-store-uri {uri}`"
        log.info("MLflow: the study's runs table: %s/%s", where, runs_table_link(experiment_id))

        parameters = active_parameters()  # as configured (the catalog's are converted to node types)
        specs = active_variants()
        self._variants = {spec.name for spec in specs}
        source = _source_description(parameters)
        in_pipeline = {n.namespace.split(".")[0] for n in pipeline.nodes if n.namespace}
        studied = [spec for spec in specs if spec.name in in_pipeline]
        pipelines = run_params.get("pipeline_names") or [run_params.get("pipeline_name") or "__default__"]
        if isinstance(pipelines, str):
            pipelines = [pipelines]
        env = run_params.get("env") or "local"
        name = study_run_name(env, pipelines, source["model"], source["dataset"], len(studied or specs))
        client.update_run(run_id, name=name)
        set_tags(client, run_id, {"pipeline": "+".join(pipelines), "kedro_env": env, "model": source["model"],
                                  "knowledge_source": source["dataset"], "n_variants": len(studied or specs)})

        self._declarations = _declarations(pipeline, catalog)
        check_declarations(self._declarations.values(), {n: _filepath(catalog, n) for n in self._declarations})
        variant_params = {spec.name: {**_variant_params(spec), **source} for spec in specs}
        # What a user filters variant runs by (`tags.method = 'gptq' and tags.bits = '4'`).
        variant_tags = {
            spec.name: {
                **{k: v for k, v in _variant_params(spec).items() if k in ("method", "bits", "group_size") and v is not None},
                "model": source["model"],
                "knowledge_source": source["dataset"],
            }
            for spec in specs
        }
        self._runs = VariantRuns(client, run_id, variant_params, variant_tags, run_tags=tags)
        # Every parameter as configured, flattened: kedro-mlflow logs a node's parameters after
        # Kedro converted them to the node's types (`training` as "TrainConfig(...)").
        self._runs.log_params(flatten_params(parameters))
        self._catalog = catalog
        for spec in studied:
            self._runs.open(spec.name)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node) -> None:
        declaration = self._declarations.get(dataset_name)
        if self._runs is None or declaration is None:
            return
        from .tracking import log_saved

        prefix, _, local = dataset_name.partition(".")
        variant = prefix if local and prefix in self._variants else None
        filepath = _filepath(self._catalog, dataset_name)
        path = None if filepath is None else self._project_path / filepath  # absolute stays absolute
        log_saved(self._runs, declaration, data, variant, path)
        if declaration.report and path is not None:
            self._describe_report(f"{declaration.artifact_path}/{path.name}".strip("/"))

    def _describe_report(self, artifact: str) -> None:
        """Point every run's description at the report artifact of the pipeline run."""
        runs = self._runs
        link = f"#/experiments/{runs.experiment_id}/runs/{runs.parent_run_id}/artifactPath/{artifact}"
        runs.set_note(f"Report of this study: [{artifact}]({link}) (an artifact of this run).")
        for variant in runs.run_ids:
            runs.set_note(
                f"Variant `{variant}` of the study in the parent run; its report: [{artifact}]({link}) "
                "(an artifact of the parent run). This run holds the variant's metrics, its per-layer curves "
                "(metric histories, step = layer) and its own figure.",
                variant=variant,
            )

    @hook_impl(tryfirst=True)  # before kedro-mlflow ends the parent run
    def after_pipeline_run(self, run_params: dict[str, Any], run_result, pipeline, catalog) -> None:
        self._finish("FINISHED")

    @hook_impl(tryfirst=True)
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline, catalog) -> None:
        self._finish("FAILED")  # kedro-mlflow ends the parent run FAILED

    def _finish(self, status: str) -> None:
        if self._guard is not None:
            self._guard.uninstall()
        if self._runs is not None:
            self._runs.finish(status)
        self._runs = None
        self._catalog = None
        self._guard = None

    def _end_open_runs(self, status: str, reason: str) -> None:
        """End the nested runs and the pipeline run with ``status`` (a signal, an exit with the
        runs open, an error before the pipeline started)."""
        import mlflow
        from mlflow.tracking import MlflowClient

        if self._runs is not None:
            self._runs.finish(status)
        parent_id = self._parent_run_id
        if parent_id is None:
            return
        client = MlflowClient(mlflow.get_tracking_uri())
        client.set_tag(parent_id, "fkr.ended_by", reason)
        client.set_terminated(parent_id, status)
        # Off MLflow's run stack, or its exit handler ends the run FINISHED: kedro-mlflow puts
        # the run on the stack again before every node (nested=True allows repeats).
        while (active := mlflow.active_run()) is not None and active.info.run_id == parent_id:
            mlflow.end_run(status)
        log.warning("MLflow: run %s and its variant runs ended %s: %s", parent_id, status, reason)
        self._runs = None
        self._parent_run_id = None


def _mlflow_conf(loader) -> dict[str, Any]:
    """The merged ``mlflow.yml`` of the run's environment, read as kedro-mlflow reads it."""
    from kedro.config import MissingConfigException

    if "mlflow" not in loader.config_patterns:
        loader.config_patterns.update({"mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"]})
    try:
        return dict(loader["mlflow"] or {})
    except MissingConfigException:
        return {}


def _experiment_name(mlflow_conf: dict[str, Any]) -> str:
    from kedro.framework.project import PACKAGE_NAME

    name = ((mlflow_conf.get("tracking") or {}).get("experiment") or {}).get("name")
    return name or PACKAGE_NAME


def _check_experiment_artifacts(uri: str, database: Path, experiment: str, project: Path) -> None:
    from mlflow.tracking import MlflowClient

    from .tracking import check_artifact_location

    found = MlflowClient(uri).get_experiment_by_name(experiment)
    if found is not None:
        check_artifact_location(experiment, found.artifact_location, database, project)


def _declarations(pipeline, catalog) -> dict[str, Any]:
    """``{dataset: Declaration}`` for every dataset of the pipeline whose catalog entry
    declares ``metadata: {fkr_tracking: ...}`` (dataset factories included)."""
    from .tracking import parse_declaration

    out = {}
    for name in pipeline.datasets():
        metadata = _entry(catalog, name).get("metadata")
        declaration = parse_declaration(name, metadata)
        if declaration is not None:
            out[name] = declaration
    return out


def _entry(catalog, name: str) -> dict[str, Any]:
    """A dataset's catalog entry, with factory placeholders filled in (``{variant}.footprint``
    for ``fp.footprint``); empty for a dataset the catalog does not configure."""
    if name.startswith("params:") or name == "parameters":
        return {}
    resolver = getattr(catalog, "config_resolver", None)
    if resolver is None:
        return {}
    return resolver.resolve_pattern(name) or {}


def _filepath(catalog, name: str) -> str | None:
    """Where a dataset writes, from its catalog entry (``filepath`` or ``path``; Kedro makes
    relative ones absolute from the project)."""
    entry = _entry(catalog, name)
    value = entry.get("filepath") or entry.get("path")
    return None if value is None else str(value)


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
