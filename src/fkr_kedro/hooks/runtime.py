"""Hooks that set up and clean up a run: the active configuration and the device check,
the unconfigured-output guard, torch's threads, MLflow's run stack."""

from __future__ import annotations

import logging
import os
from typing import Any

from kedro.framework.hooks import hook_impl

from ..kedro_config import catalog_filepath, check_outputs_configured, project_pipelines, submitted_job
from ..run_config import set_active_config_loader, study_parameters

log = logging.getLogger(__name__)


class ActiveConfigHook:
    """Record the new context's config loader so generated pipelines follow ``--env``, and
    before any node runs stop a run that asks for a device this machine lacks (building the
    pipelines needs no GPU: ``kedro viz`` or a job graph of the ``paper`` env work anywhere)
    or that has an output without a catalog entry (it would silently stay in memory)."""

    def __init__(self):
        self._conf_source: str | None = None

    @hook_impl
    def after_context_created(self, context) -> None:
        set_active_config_loader(context.config_loader)
        self._conf_source = str(context.config_loader.conf_source)

    @hook_impl(tryfirst=True)  # before kedro-mlflow opens a run for nothing
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        from ..modeling.load import check_device

        check_outputs_configured(pipeline, catalog, self._conf_source, (run_params or {}).get("env"))
        check_device(study_parameters().base_model)

class ThreadsHook:
    """Set torch's intra-op threads before each node from ``runtime.threads``
    (parameters_runtime.yml), tag the MLflow run with them, and restore torch's setting when
    the run ends. Two threads on a shared 2-core machine collapse under one other busy
    process (docs/performance.md), hence ``auto``: the free cores only where they pay."""

    def __init__(self):
        self._settings = None
        self._initial: int | None = None
        self._pipeline_of: dict[str, str] = {}
        self._base_model: str | None = None
        self._parameters: int | None = None

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        import torch

        self._settings = study_parameters().runtime.threads
        self._initial = torch.get_num_threads()
        self._base_model = catalog_filepath(catalog, "base_model@dir")
        self._parameters = None
        self._pipeline_of = {}
        if self._settings.pipelines:
            for name, pipe in project_pipelines().items():
                if name != "__default__":
                    for node in pipe.nodes:
                        self._pipeline_of.setdefault(node.name, name)

    @hook_impl
    def before_node_run(self, node) -> None:
        import torch

        if self._settings is None:
            return
        threads = self._settings.for_node(node.name, self._pipeline_of.get(node.name))
        if threads == "auto":
            threads = self._auto_threads(node.name)
        threads = threads or self._initial
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        log.debug("%s: %d torch threads", node.name, threads)
        try:
            import mlflow

            if mlflow.active_run() is not None:
                mlflow.set_tag(f"torch_threads.{node.name}", threads)
        except Exception as error:  # recording is best effort; the run goes on
            log.debug("could not tag the torch threads: %s", error)

    def _auto_threads(self, node: str) -> int:
        """``auto``: one thread for a small base model, else the cores free right now, never
        more than torch had when the run started (OMP_NUM_THREADS where set, a Slurm task's
        cores). The ``auto_one_thread`` nodes get one, the ``auto_free_cores`` nodes the free
        cores whatever the model. The base model's size is read once it exists (the train
        pipeline may make it first)."""
        from ..modeling.threads import free_core_threads, free_cores, parameter_count

        name = node.rsplit(".", 1)[-1]
        if name in self._settings.auto_one_thread:
            return 1
        if name not in self._settings.auto_free_cores:
            if self._parameters is None and self._base_model is not None:
                self._parameters = parameter_count(self._base_model)
            if self._parameters is None or self._parameters < self._settings.auto_min_parameters:
                return 1
        cores = os.cpu_count() or 1
        free = free_cores(cores=cores)
        threads = free_core_threads(free, min(cores, self._initial or cores))
        log.debug("%s: %.1f of %d cores free, %d threads (auto)", node, free, cores, threads)
        return threads

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], run_result, pipeline, catalog) -> None:
        self._restore()

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline, catalog) -> None:
        self._restore()

    def _restore(self) -> None:
        import torch

        if self._initial is not None:
            torch.set_num_threads(self._initial)
        self._settings, self._initial = None, None

class MlflowRunStackHook:
    """Leaves no MLflow run active after a pipeline run. kedro-mlflow puts the pipeline run on
    MLflow's run stack again before every node and ends it once, so in one process (a notebook,
    a test) the next ``session.run`` would log into the ended run; runs after kedro-mlflow's own
    end-of-run hooks and takes the remaining copies off."""

    def __init__(self):
        self._run_id: str | None = None

    @hook_impl(trylast=True)  # after kedro-mlflow has started the run
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        import mlflow

        active = mlflow.active_run()
        self._run_id = active.info.run_id if active is not None else None

    @hook_impl(trylast=True)  # after kedro-mlflow has ended the run
    def after_pipeline_run(self, run_params: dict[str, Any], run_result, pipeline, catalog) -> None:
        self._clear("FINISHED")

    @hook_impl(trylast=True)
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline, catalog) -> None:
        self._clear("FAILED")

    def _clear(self, status: str) -> None:
        import mlflow

        while self._run_id is not None and (active := mlflow.active_run()) is not None and active.info.run_id == self._run_id:
            mlflow.end_run(status)
        job = submitted_job(self._run_id)
        # kedro-mlflow ends the run it opened; the study's parent run of `kedro submit` is ended
        # by the submission's last job (`kedro submit-end`, fkr_kedro.tracking.end_study).
        if job is not None:
            from mlflow.tracking import MlflowClient

            MlflowClient(mlflow.get_tracking_uri()).update_run(self._run_id, status="RUNNING")
        self._run_id = None
