"""Project hooks."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from .run_config import active_parameters, active_variants, kedro_command, set_active_config_loader, study_parameters

log = logging.getLogger(__name__)

# Set in the jobs of `kedro submit` (fkr_kedro.cli): the study's parent run (kedro-mlflow opens
# it through mlflow.yml's tracking.run.id) and the job's kind (shared, variant, report).
PARENT_RUN_ENV = "FKR_MLFLOW_PARENT_RUN_ID"
SUBMIT_JOB_ENV = "FKR_SUBMIT_JOB"
STUDY_NAME_TAG = "fkr.study_name"  # the parent run's name, set by `kedro submit`


def submitted_job(run_id: str | None) -> str | None:
    """The kind of `kedro submit` job this process is when it logs into the study's parent
    run ``run_id``; None for a plain `kedro run`."""
    if run_id is None or os.environ.get(PARENT_RUN_ENV) != run_id:
        return None
    return os.environ.get(SUBMIT_JOB_ENV) or None


class ActiveConfigHook:
    """Record the new context's config loader so generated pipelines follow ``--env``, and
    stop a run that asks for a device this machine lacks before any node runs (building the
    pipelines needs no GPU: ``kedro viz`` or a job graph of the ``paper`` env work anywhere)."""

    @hook_impl
    def after_context_created(self, context) -> None:
        set_active_config_loader(context.config_loader)

    @hook_impl(tryfirst=True)  # before kedro-mlflow opens a run for nothing
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        from .modeling.load import check_device

        check_device(study_parameters().base_model)


class ThreadsHook:
    """Set torch's intra-op threads before each node from ``runtime.threads``
    (parameters_runtime.yml), tag the MLflow run with them, and restore torch's setting when
    the run ends. Two threads on a shared 2-core machine collapse under one other busy
    process (docs/performance.md), hence one by default."""

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
        self._base_model = _filepath(catalog, "base_model@dir")
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
        """``auto``: one thread for a small base model, else the cores free right now. The
        base model's size is read once it exists (the train pipeline may make it first)."""
        from .modeling.threads import choose_threads, free_cores, parameter_count

        if node.rsplit(".", 1)[-1] in self._settings.auto_one_thread:
            return 1
        if self._parameters is None and self._base_model is not None:
            self._parameters = parameter_count(self._base_model)
        minimum = self._settings.auto_min_parameters
        if self._parameters is None or self._parameters < minimum:
            return 1
        cores = os.cpu_count() or 1
        free = free_cores(cores=cores)
        threads = choose_threads(self._parameters, free, cores, minimum)
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


class MissingInputHook:
    """A pipeline input that does not exist yet stops the run, once, with every pipeline that
    has to run first, in order (``one_hop_scores does not exist yet ...: run `kedro run`
    (data_prep -> train -> quantize -> evaluate), or `kedro run
    --pipelines=data_prep,train,quantize,evaluate` first``), checked when the input is about
    to be loaded. A single pipeline is named as before (`kedro run --pipeline=probe`)."""

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
        # Every missing input of the run, so that one message names everything to run first.
        missing = sorted(name for name in self._free_inputs if not self._catalog.exists(name))
        chain = missing_chain(missing, self._catalog.exists)
        if not chain:
            return  # a raw input: the dataset's own error says what is missing
        from kedro.io import DatasetError

        where = _filepath(self._catalog, dataset_name)
        raise DatasetError(
            f"{dataset_name} does not exist yet{f' ({where})' if where else ''}: {run_chain_advice(chain)}"
        )

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], run_result, pipeline, catalog) -> None:
        self._catalog = None

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline, catalog) -> None:
        self._catalog = None


class StaleOutputsHook:
    """After a run that rewrote datasets without recomputing everything computed from them
    (``--only-missing-outputs`` after one variant was removed, ``--namespaces=gptq_w4_g32``,
    ``--pipeline=evaluate``): one warning naming the outputs on disk that are now older than
    their inputs (the cross-variant summary tables, report.html) and the command that
    recomputes them. Kedro itself reruns a node only when its own outputs are missing."""

    def __init__(self):
        self._catalog = None
        self._run_params: dict[str, Any] = {}
        self._ran: set[str] = set()
        self._saved: set[str] = set()
        self._start = 0.0

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        import time

        self._catalog, self._run_params = catalog, dict(run_params or {})
        self._ran, self._saved, self._start = set(), set(), time.time()

    @hook_impl
    def after_node_run(self, node) -> None:
        self._ran.add(node.name)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str) -> None:
        self._saved.add(dataset_name)

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], run_result, pipeline, catalog) -> None:
        try:
            advice = self.stale_advice()
        except Exception as error:  # never fail a finished run over a warning
            log.debug("stale-output check skipped: %s", error)
            advice = None
        if advice:
            log.warning(advice)
        self._catalog = None

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline, catalog) -> None:
        self._catalog = None

    def stale_advice(self) -> str | None:
        """The warning for this run, or None when nothing on disk is older than its inputs."""
        changed = {name for name in self._saved if self._rewritten(name)}
        if self._catalog is None or not changed:
            return None
        pipelines = project_pipelines()
        stale, roots = stale_nodes(pipelines, changed, self._ran)
        on_disk = sorted(
            {o for n in stale for o in n.outputs if _filepath(self._catalog, o) and self._catalog.exists(o)}
        )
        if not on_disk:
            return None
        from .pipeline_registry import NOT_IN_DEFAULT

        command = []  # kedro_command adds the study's --env and --params
        outside = sorted({name for name, p in pipelines.items() if name in NOT_IN_DEFAULT and set(p.nodes) & set(roots)})
        if outside:
            inside = sorted({name for name, p in pipelines.items() if set(p.nodes) & set(roots)})
            command.append(f"--pipelines={','.join(inside)}")
        command.append(f"--from-nodes={','.join(n.name for n in roots)}")
        shown = ", ".join(on_disk[:8]) + (f" and {len(on_disk) - 8} more" if len(on_disk) > 8 else "")
        return (
            f"{len(on_disk)} output(s) on disk are now older than inputs this run rewrote, and were not "
            f"recomputed: {shown}. Recompute them with `{kedro_command(*command)}` (without --only-missing-outputs)"
        )

    def _rewritten(self, dataset_name: str) -> bool:
        """Whether the run changed the dataset's file or folder (a kept variant is saved
        without being rewritten)."""
        filepath = _filepath(self._catalog, dataset_name) if self._catalog is not None else None
        if filepath is None:
            return False  # in memory: only nodes of this run read it
        path = Path(filepath)
        if not path.exists():
            return False
        times = [path.stat().st_mtime] + ([p.stat().st_mtime for p in path.iterdir()] if path.is_dir() else [])
        return max(times) >= self._start - 1


def stale_nodes(pipelines: dict, changed: set[str], ran: set[str]) -> tuple[list, list]:
    """The nodes of ``pipelines`` that did not run (``ran``: node names) but read, directly
    or through other such nodes, a dataset in ``changed``; and the first of them (those
    that read no output of another). Transcoded names count as one dataset."""
    from kedro.pipeline import Pipeline

    def base(name: str) -> str:
        return name.split("@")[0]

    full = sum(pipelines.values(), Pipeline([]))
    tainted = {base(name) for name in changed}
    first_tainted = set(tainted)
    stale, roots = [], []
    for node in full.nodes:  # topologically sorted
        if node.name in ran or not any(base(i) in tainted for i in node.inputs):
            continue
        stale.append(node)
        if not any(base(i) in tainted - first_tainted for i in node.inputs):
            roots.append(node)
        tainted |= {base(o) for o in node.outputs}
    return stale, roots


def run_chain_advice(chain: list[str]) -> str:
    """What to run for the pipelines of ``chain`` (in order): the default ``kedro run`` when
    it holds them all, and the explicit list."""
    from .pipeline_registry import NOT_IN_DEFAULT

    if len(chain) == 1:
        return f"the {chain[0]!r} pipeline writes it; run `{kedro_command(f'--pipeline={chain[0]}')}` first"
    explicit = f"`{kedro_command('--pipelines=' + ','.join(chain))}`"  # --pipeline (singular) takes one name
    if any(name in NOT_IN_DEFAULT for name in chain):
        return f"run {explicit} first ({' -> '.join(chain)})"
    return f"run `{kedro_command()}` ({' -> '.join(chain)}), or {explicit} first"


# The order in which the default `kedro run` runs the study's pipelines (each reads what the
# ones before it write); a missing-input message lists the pipelines to run in this order.
RUN_ORDER = ("data_prep", "train", "quantize", "evaluate", "probe", "report")


def missing_chain(missing: list[str], exists) -> list[str]:
    """The pipelines that must run, in order, to write the datasets ``missing``: their
    producers and, before them, the producers of those pipelines' own missing inputs
    (``exists(name)`` says whether a dataset is there). Listed in run order: every pipeline
    after those whose outputs it reads, and otherwise as in :data:`RUN_ORDER` (evaluate
    before probe, as the default pipeline runs them; pipelines outside it by name)."""
    producers = project_pipelines()
    needed: set[str] = set()

    def visit(dataset: str) -> None:
        name = _producer(dataset, producers)
        if name is None or name in needed:
            return
        needed.add(name)
        for wanted in sorted(producers[name].inputs()):
            if not wanted.startswith("params:") and not exists(wanted):
                visit(wanted)

    for dataset in missing:
        visit(dataset)
    return _run_order(needed, producers)


def _run_order(names: set[str], pipelines: dict) -> list[str]:
    """``names`` sorted so that each pipeline comes after those among them whose outputs it
    reads (in any transcoding), ties broken by :data:`RUN_ORDER`, then by name."""

    def bases(datasets) -> set[str]:
        return {d.split("@")[0] for d in datasets}

    after = {
        name: {other for other in names if other != name
               and bases(pipelines[name].inputs()) & bases(pipelines[other].all_outputs())}
        for name in names
    }
    rank = {name: (RUN_ORDER.index(name) if name in RUN_ORDER else len(RUN_ORDER), name) for name in names}
    order: list[str] = []
    while len(order) < len(names):
        ready = [n for n in names if n not in order and after[n] <= set(order)]
        # A cycle between pipelines (none today): fall back to the rank for what is left.
        order.append(min(ready or [n for n in names if n not in order], key=rank.__getitem__))
    return order


def _producer(dataset_name: str, pipelines: dict) -> str | None:
    """The first pipeline that outputs the dataset (in any transcoding: ``base_model@hf``
    writes what ``base_model@dir`` reads)."""
    base = dataset_name.split("@")[0]
    for name, pipeline in pipelines.items():
        if base in {output.split("@")[0] for output in pipeline.all_outputs()}:
            return name
    return None


def project_pipelines() -> dict:
    """Every pipeline under ``pipelines/``, by name. Built here because ``kedro run
    --pipelines=NAME`` registers only the pipelines it runs."""
    import importlib
    import pkgutil

    from . import pipelines as package

    found = {}
    for module in sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.ispkg):
        try:
            found[module] = importlib.import_module(f"{package.__name__}.{module}").create_pipeline()
        except Exception:  # a pipeline that cannot be built here (its own error shows when it runs)
            continue
    return found


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
        self._job: str | None = None  # the kind of `kedro submit` job, None for `kedro run`
        self._own: set[str] = set()  # the variants whose nodes this run holds
        self._guard = None
        self._project_path = Path.cwd()

    @hook_impl(tryfirst=True)  # before kedro-mlflow reads mlflow.yml and opens the store
    def after_context_created(self, context) -> None:
        from .tracking import check_env, prepare_sqlite_store, sqlite_path

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
        prepare_sqlite_store(database, Path(context.project_path), artifact_root=Path.cwd() / "mlruns")
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
        if self._job is None:  # a submitted study's parent run outlives every job: no process tags
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
        sweep = _sweep_description(pipelines)
        if sweep is not None:  # a sweep trains its own models on its own worlds: name those
            source, n_studied = sweep
        else:
            n_studied = len(studied or specs)
        env = run_params.get("env") or "local"
        study_name = client.get_run(run_id).data.tags.get(STUDY_NAME_TAG) if self._job is not None else None
        if study_name:  # kedro-mlflow renames the run it resumes after the pipeline: the study's name again
            client.update_run(run_id, name=study_name)
        if self._job is None:  # `kedro submit` names the study's run and tags it once
            name = study_run_name(env, pipelines, source["model"], source["dataset"], n_studied)
            client.update_run(run_id, name=name)
            set_tags(client, run_id, {"pipeline": "+".join(pipelines), "kedro_env": env, "model": source["model"],
                                      "knowledge_source": source["dataset"], "n_variants": n_studied})

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
        self._own = {spec.name for spec in studied}
        if self._job == "report":
            # The variants' figures (report.<variant> nodes) go into their latest nested run
            # of the study, made by their own job.
            own = self._own
            for variant, nested in latest_nested_runs(client, experiment_id, run_id).items():
                if variant in self._variants and variant not in own:
                    self._runs.adopt(variant, nested)
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

        if self._job == "variant" and self._runs is not None:
            # A variant job stopped (scancel, its time limit): its variant failed; the study's
            # parent run goes on (the report job ends it and names the missing variant).
            client = MlflowClient(mlflow.get_tracking_uri())
            own = {v: r for v, r in self._runs.run_ids.items() if v in self._own}
            for nested in own.values():
                client.set_tag(nested, "fkr.ended_by", reason)
            self._runs.finish("FAILED")
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
        # kedro-mlflow ends the run it opened; the study's parent run of `kedro submit` ends
        # with the report job (or FAILED with a failed shared job, after which nothing runs).
        if job == "variant" or (job == "shared" and status == "FINISHED"):
            from mlflow.tracking import MlflowClient

            MlflowClient(mlflow.get_tracking_uri()).update_run(self._run_id, status="RUNNING")
        self._run_id = None


def latest_nested_runs(client, experiment_id: str, parent_run_id: str) -> dict[str, str]:
    """``{variant: run id}`` of the latest nested run of each variant under the parent run."""
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        order_by=["attributes.start_time DESC"], max_results=10_000,
    )
    latest: dict[str, str] = {}
    for run in runs:
        variant = run.data.tags.get("variant")
        if variant and variant not in latest:
            latest[variant] = run.info.run_id
    return latest


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
    entry = resolver.resolve_pattern(name) or {}
    if "filepath" not in entry and "path" not in entry and hasattr(catalog, "to_config"):
        # A file dataset added to the catalog as an object (not from configuration); memory
        # datasets, saved on every node, have no file and skip serialising the catalog.
        from kedro.io import MemoryDataset

        try:
            if not isinstance(catalog.get(name), MemoryDataset):
                entry = {**entry, **catalog.to_config()[0].get(name, {})}
        except Exception:  # a dataset that cannot describe itself as configuration
            pass
    return entry


def _filepath(catalog, name: str) -> str | None:
    """Where a dataset writes, from its catalog entry (``filepath`` or ``path``; Kedro makes
    relative ones absolute from the project)."""
    entry = _entry(catalog, name)
    value = entry.get("filepath") or entry.get("path")
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


def _sweep_description(pipelines: list[str]) -> tuple[dict[str, str], int] | None:
    """For a run of the scaling or capacity sweep alone: its model sizes, its world(s) and its
    quantized points a model, instead of the default study's model and variants."""
    from .reporting.describe import describe_dataset

    params = study_parameters()
    seeds: list[int] = []
    if pipelines == ["scaling"] and params.scaling is not None:
        sweep, dataset, points = params.scaling, describe_dataset(None, params.scaling.world), len(params.scaling.points())
        seeds = params.scaling.training_seeds()
    elif pipelines == ["capacity"] and params.capacity is not None:
        people = ", ".join(str(p) for p in params.capacity.people)
        sweep, dataset, points = params.capacity, f"synthetic worlds of {people} people", len(params.capacity.variants)
    else:
        return None
    model = f"{len(sweep.sizes)} sizes trained from scratch ({', '.join(sweep.sizes)})"
    if len(seeds) > 1:
        model += f", seeds {', '.join(map(str, seeds))}"
    return {"model": model, "dataset": dataset}, points


def _source_description(parameters: dict[str, Any]) -> dict[str, str]:
    """The model and the dataset every variant derives from, as short params, from
    ``base_model`` (parameters_train.yml) and ``knowledge`` (parameters_data_prep.yml)."""
    from .reporting.describe import describe_dataset, describe_model

    return {
        "model": describe_model(parameters.get("base_model"), parameters.get("model_shape")),
        "dataset": describe_dataset(parameters.get("knowledge"), parameters.get("world")),
    }
