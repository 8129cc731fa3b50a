"""MLflow: one nested run per variant under the pipeline run that kedro-mlflow opens, and
what each catalog entry declares to be tracked (the library part is ``fkr_kedro.tracking``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from ..kedro_config import (
    STUDY_NAME_TAG,
    catalog_filepath,
    declarations,
    experiment_name,
    mlflow_conf,
    study_run,
    submitted_job,
    tracking_uri,
)
from ..run_config import active_parameters, active_training_seeds, active_variants, study_parameters

log = logging.getLogger(__name__)


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
        self._variants: set[str] = set()  # variant namespaces: gptq_w4_g32, seed1.gptq_w4_g32
        self._seed_namespaces: set[str] = set()  # seed1, seed2 (training_seeds)
        self._declarations: dict = {}
        self._parent_run_id: str | None = None
        self._job: str | None = None  # the kind of `kedro submit` job, None for `kedro run`
        self._own: set[str] = set()  # the variants whose nodes this run holds
        self._guard = None
        self._project_path = Path.cwd()
        self._node_started: dict[str, float] = {}

    @hook_impl(tryfirst=True)  # before kedro-mlflow reads mlflow.yml and opens the store
    def after_context_created(self, context) -> None:
        from ..tracking import check_env, prepare_sqlite_store, sqlite_path

        self._project_path = Path(context.project_path)
        loader = context.config_loader
        if context.env:  # `--env` or KEDRO_ENV; the default env may be absent
            check_env(Path(loader.conf_source), context.env)
        conf = mlflow_conf(loader)
        uri = tracking_uri(conf)
        database = sqlite_path(uri, Path.cwd())
        if database is None:
            return
        # The artifacts of the project's store live in the project's mlruns/ (MLflow's default,
        # ./mlruns, would follow the folder the process started in).
        prepare_sqlite_store(database, Path(context.project_path), artifact_root=Path(context.project_path) / "mlruns",
                             experiment=experiment_name(conf))
        if database.exists():
            _check_experiment_artifacts(uri, database, experiment_name(conf), Path(context.project_path))

    @hook_impl(trylast=True)  # after kedro-mlflow has started the parent run
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        import mlflow

        parent = mlflow.active_run()
        if parent is None:
            log.info("MLflow: no active run (tracking disabled for this pipeline); variants are not logged")
            self._runs = None
            return
        from ..tracking import RunGuard

        self._parent_run_id = parent.info.run_id
        self._job = submitted_job(parent.info.run_id)
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

        from ..quantization.methods import METHODS
        from ..tracking import (
            VariantRuns,
            check_declarations,
            end_stale_runs,
            flatten_params,
            latest_nested_runs,
            mlflow_ui_command,
            process_tags,
            set_experiment_kind,
            set_tags,
            slurm_job_tags,
            study_params,
            take_job_tags,
            variant_params,
            variant_tags,
        )

        client = MlflowClient(mlflow.get_tracking_uri())
        run_id, experiment_id = parent.info.run_id, parent.info.experiment_id
        tags = process_tags()
        if self._job is None:  # a submitted study's parent run outlives every job: no process tags
            set_tags(client, run_id, tags)
        else:  # this job's own tags (kedro-mlflow's, from its arguments) go on its nested runs
            tags = {**tags, **take_job_tags(client, run_id), **slurm_job_tags()}
        end_stale_runs(client, [experiment_id])
        set_experiment_kind(client, experiment_id)
        log.info("%s (the study's runs)", mlflow_ui_command(mlflow.get_tracking_uri(), experiment_id))

        parameters = active_parameters()  # as configured (the catalog's are converted to node types)
        params = study_parameters()
        specs = active_variants(params)
        # One nested run per variant of every trained model: ``<variant>`` for training.seed,
        # ``seed<k>.<variant>`` for each further training seed (training_seeds). A loaded base
        # model was not trained here: its runs record no training seed.
        trained = params.base_model.kind == "train"
        seeds = {params.training.seed if trained else None: None, **active_training_seeds(params)}
        runs = {(f"{ns}.{spec.name}" if ns else spec.name): (spec, seed) for seed, ns in seeds.items() for spec in specs}
        self._variants = set(runs)
        self._seed_namespaces = {ns for ns in seeds.values() if ns}
        in_pipeline = {self._split(f"{n.namespace}.node")[0] for n in pipeline.nodes if n.namespace}
        studied = [key for key in runs if key in in_pipeline]
        pipelines = run_params.get("pipeline_names") or [run_params.get("pipeline_name") or "__default__"]
        if isinstance(pipelines, str):
            pipelines = [pipelines]
        env = run_params.get("env") or "local"
        name, study_tags, source = study_run(env, pipelines, len(studied or runs))
        study_name = client.get_run(run_id).data.tags.get(STUDY_NAME_TAG) if self._job is not None else None
        if study_name:  # kedro-mlflow renames the run it resumes after the pipeline: the study's name again
            client.update_run(run_id, name=study_name)
        if self._job is None:  # `kedro submit` names the study's run and tags it once
            client.update_run(run_id, name=name)
            set_tags(client, run_id, study_tags)

        self._declarations = declarations(pipeline, catalog)
        check_declarations(self._declarations.values(), {n: catalog_filepath(catalog, n) for n in self._declarations})
        settings = {key: {**variant_params(spec, METHODS[spec.method].options), "training_seed": seed}
                    for key, (spec, seed) in runs.items()}
        # Each variant's settings as configured (``setting.<key>``) too: the parent run does not log them.
        configured = parameters.get("variants") or {}
        self._runs = VariantRuns(
            client, run_id,
            {key: {**values, **source,
                   **flatten_params(configured.get(runs[key][0].variant_group) or {}, prefix="setting.")}
             for key, values in settings.items()},
            {key: variant_tags(values, source) for key, values in settings.items()},
            run_tags=tags,
        )
        # Every parameter as configured, flattened: kedro-mlflow logs a node's parameters after
        # Kedro converted them to the node's types (`training` as "TrainConfig(...)").
        # The variants' own settings go on their nested runs only (a resubmission may change them).
        self._runs.log_params(study_params(parameters))
        self._catalog = catalog
        self._own = set(studied)
        if self._job == "report":
            # The variants' figures (report.<variant> nodes) go into their latest nested run
            # of the study, made by their own job.
            own = self._own
            for variant, nested in latest_nested_runs(client, experiment_id, run_id).items():
                if variant in self._variants and variant not in own:
                    self._runs.adopt(variant, nested)
        for key in studied:
            self._runs.open(key)

    def _split(self, name: str) -> tuple[str | None, str | None, str]:
        """``(variant namespace, training-seed namespace, the rest)`` of a node or dataset name:
        ``seed1.gptq_w4_g32.recall_metrics`` -> (``seed1.gptq_w4_g32``, ``seed1``,
        ``recall_metrics``); ``seed1.recall_by_variant`` -> (None, ``seed1``, ``recall_by_variant``)."""
        parts = name.split(".")
        seed = parts[0] if len(parts) > 1 and parts[0] in self._seed_namespaces else None
        rest = parts[1:] if seed else parts
        if len(rest) > 1:
            key = f"{seed}.{rest[0]}" if seed else rest[0]
            if key in self._variants:
                return key, seed, ".".join(rest[1:])
        return None, seed, ".".join(rest)

    @hook_impl
    def before_node_run(self, node) -> None:
        import time

        self._node_started[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node) -> None:
        """A variant's node's wall time on the variant's nested run (``node_seconds.quantize``):
        the work (quantizing, capturing) is in the node, so this is its real duration."""
        import time

        started = self._node_started.pop(node.name, None)
        variant, _, local = self._split(node.name)
        if self._runs is None or started is None or variant is None:
            return
        self._runs.log_metrics({f"node_seconds.{local}": time.perf_counter() - started}, variant=variant)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node) -> None:
        declaration = self._declarations.get(dataset_name)
        if self._runs is None or declaration is None:
            return
        from ..tracking import log_saved

        variant, seed, _ = self._split(dataset_name)
        filepath = catalog_filepath(self._catalog, dataset_name)
        path = None if filepath is None else self._project_path / filepath  # absolute stays absolute
        # A further training seed's study-level outputs go on the parent run under its namespace
        # (metrics ``seed1.<key>``, artifacts in ``seed1/<folder>``), beside the first seed's.
        log_saved(self._runs, declaration, data, variant, path, prefix=seed if variant is None else None)
        if declaration.report and path is not None:
            self._describe_report(f"{declaration.artifact_path}/{path.name}".strip("/"))

    def _describe_report(self, artifact: str) -> None:
        """Point every run's description at the report artifact of the pipeline run."""
        from ..tracking import describe_report

        describe_report(self._runs, artifact)

    @hook_impl(tryfirst=True)  # before kedro-mlflow ends the parent run
    def after_pipeline_run(self, run_params: dict[str, Any], run_result, pipeline, catalog) -> None:
        self._finish("FINISHED")

    @hook_impl(tryfirst=True)
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline, catalog) -> None:
        from ..tracking import failure_reason

        self._finish("FAILED", failure_reason(error))  # kedro-mlflow ends the parent run FAILED

    def _finish(self, status: str, reason: str | None = None) -> None:
        if self._guard is not None:
            self._guard.uninstall()
        if self._runs is not None:
            self._runs.finish(status, reason)
        self._runs = None
        self._catalog = None
        self._guard = None

    def _end_open_runs(self, status: str, reason: str) -> None:
        """End the nested runs and the pipeline run with ``status`` (a signal, an exit with the
        runs open, an error before the pipeline started)."""
        import mlflow
        from mlflow.tracking import MlflowClient

        if self._job == "variant" and self._runs is not None:
            # A variant job stopped (scancel, its time limit): its variant failed; the study's
            # parent run goes on (the report job ends it and names the missing variant).
            client = MlflowClient(mlflow.get_tracking_uri())
            own = {v: r for v, r in self._runs.run_ids.items() if v in self._own}
            for nested in own.values():
                client.set_tag(nested, "fkr.ended_by", reason)
            self._runs.finish("FAILED", reason)
            log.warning("MLflow: variant runs %s ended FAILED: %s", sorted(own), reason)
            self._runs = None
            self._parent_run_id = None
            return
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

def _check_experiment_artifacts(uri: str, database: Path, experiment: str, project: Path) -> None:
    from mlflow.tracking import MlflowClient

    from ..tracking import check_artifact_location

    found = MlflowClient(uri).get_experiment_by_name(experiment)
    if found is not None:
        check_artifact_location(experiment, found.artifact_location, database, project)
