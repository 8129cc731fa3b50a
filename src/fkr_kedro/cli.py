"""Project commands (Kedro loads ``cli`` from ``<package>.cli``): ``kedro submit`` runs the
study as a graph of Slurm jobs (docs/scale_out.md).

The job graph comes from the pipeline's namespaces (``Pipeline.group_nodes_by("namespace")``,
checked by Kedro's namespace check, which must pass): one job for the shared stages, one
array task per variant (or scaling model size) namespace, one job for what reads every
namespace. Each job is a plain sbatch script that runs ``kedro run`` in this project
directory; the library part is :mod:`fkr_kedro.scaleout`.
"""

from __future__ import annotations

import json
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from .kedro_config import PARENT_RUN_ENV, STUDY_NAME_TAG, SUBMIT_JOB_ENV, absolute_uri, mlflow_target, persisted, study_run

LOG_ROOT = Path("logs") / "slurm"


@click.group(name="fkr_kedro")
def cli() -> None:
    """fkr_kedro's project commands."""


def _parse_params(raw: str) -> dict[str, Any]:
    """``--params`` as ``kedro run`` reads it: ``key=value`` pairs separated by commas, dotted
    keys nested, values parsed by OmegaConf (the jobs get the same string)."""
    from omegaconf import OmegaConf

    items = [part.strip() for part in (raw or "").split(",") if part.strip()]
    for item in items:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise click.UsageError(f"--params item {item!r} must be key=value")
    return OmegaConf.to_container(OmegaConf.from_dotlist(items)) if items else {}


@cli.command()
@click.option("--env", "-e", type=str, default=None, help="Kedro configuration environment (as `kedro run --env`).")
@click.option("--pipeline", "-p", type=str, default=None, help="One pipeline to submit (as `kedro run --pipeline`).")
@click.option("--pipelines", type=str, default="", help="Pipelines to submit, comma-separated (default: __default__).")
@click.option("--params", type=str, default="", help="Runtime parameters, key=value,... (as `kedro run --params`).")
@click.option("--dry-run", is_flag=True, help="Print the job graph and the sbatch scripts; submit nothing.")
def submit(env: str | None, pipeline: str | None, pipelines: str, params: str, dry_run: bool) -> None:
    """Run the study as Slurm jobs: shared stages, one array task per variant, the report.

    Submitting again submits only what is missing or failed and says what it skips; it is
    refused while the previous submission's jobs are queued or running."""
    from kedro.framework.session import KedroSession

    from .scaleout import SlurmConfigError, SlurmError, submission_lock

    if pipeline and pipelines:
        raise click.UsageError("--pipeline and --pipelines cannot be used together")
    names = [pipeline] if pipeline else [p.strip() for p in pipelines.split(",") if p.strip()] or ["__default__"]
    runtime = _parse_params(params)
    project = Path.cwd()
    with KedroSession.create(project_path=project, env=env, runtime_params=runtime) as session:
        context = session.load_context()
        try:
            plan = _plan(context, names)
            slurm = _slurm_config(context.config_loader)
        except (SlurmConfigError, ValueError) as error:
            raise click.ClickException(str(error)) from None
        env_name = context.env or "local"
        kedro_args = [f"--env={env_name}"]
        if names != ["__default__"]:
            kedro_args.append(f"--pipelines={','.join(names)}")
        if params:
            kedro_args.append(f"--params={params}")
        tracking_uri, experiment = mlflow_target(context.config_loader)
        try:
            if dry_run:
                _submit(project, env_name, names, kedro_args, plan, _resume(plan, context), slurm, tracking_uri,
                        experiment, dry_run)
                return
            # One submission of a study at a time: two would write the same files at once.
            with submission_lock(project / LOG_ROOT / env_name / "submit.lock"):
                _refuse_while_queued(project, env_name)
                todo = _resume(plan, context)
                _submit(project, env_name, names, kedro_args, plan, todo, slurm, tracking_uri, experiment, dry_run)
        except SlurmError as error:
            raise click.ClickException(str(error)) from None


@cli.command("submit-end", hidden=True)
@click.argument("record", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def submit_end(record: Path) -> None:
    """End the study's MLflow run once a submission's jobs ended (run by its last job):
    FINISHED when every variant's nested run finished, else FAILED naming the missing."""
    from mlflow.tracking import MlflowClient

    from .scaleout import job_states
    from .tracking import end_study

    jobs = json.loads(record.read_text())
    states = job_states(jobs["jobs"].values())
    status, missing = end_study(
        MlflowClient(jobs["tracking_uri"]), jobs["parent_run_id"], jobs["variants"], jobs["submitted"], states,
        jobs["submitted_at_ms"], {k: v for k, v in jobs["jobs"].items() if k != "variant"},
    )
    click.echo(f"Slurm states: {json.dumps(states)}")
    click.echo(f"MLflow: the study's run {jobs['parent_run_id']} ended {status}"
               + (f"; missing variants: {', '.join(missing)}" if missing else ""))


# ------------------------------------------------------------------ the job graph
def _plan(context, names: list[str]):
    """The job graph of the pipelines ``names`` and what each job reads and writes."""
    from kedro.framework.project import pipelines as registry
    from kedro.pipeline import Pipeline

    from .capacity.config import namespace as capacity_namespace
    from .run_config import active_reference, active_training_seeds, active_variants, study_parameters
    from .scaleout import JobGraphError, plan_jobs

    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(f"no pipeline named {', '.join(unknown)}: the registered pipelines are {', '.join(sorted(registry))}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipeline = sum((registry[n] for n in names), Pipeline([]))
        pipeline = Pipeline(pipeline.nodes)  # Kedro checks the namespaces when it builds a pipeline
    interrupted = sorted({str(w.message) for w in caught if "is interrupted by" in str(w.message)})
    for w in caught:
        if "is interrupted by" not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if interrupted:
        raise JobGraphError(
            "Kedro's namespace check failed, so the namespaces cannot become separate jobs: "
            + " ".join(interrupted[:5]) + (f" (and {len(interrupted) - 5} more)" if len(interrupted) > 5 else "")
        )
    params = study_parameters()
    parallel = [spec.name for spec in active_variants(params)]  # the configured order
    # A further training seed's whole study (its model, variants, tables) is one array task.
    parallel += list(active_training_seeds(params).values())
    if params.scaling is not None:
        parallel += list(params.scaling.models())
    if params.capacity is not None:
        parallel += [capacity_namespace(size) for size in params.capacity.sizes]
    groups = pipeline.group_nodes_by("namespace")
    parents = {node.name: {p.name for p in deps} for node, deps in pipeline.node_dependencies.items()}
    graph = plan_jobs(groups, parallel=parallel, first={active_reference(params)}, node_parents=parents)
    _check_persisted(pipeline, graph, context.catalog)
    return {"graph": graph, "pipeline": pipeline, "params": params}


def _check_persisted(pipeline, graph, catalog) -> None:
    """Every dataset one job writes and another reads must be on disk (not in memory)."""
    stage = {n: "shared" for n in graph.shared_nodes}
    stage.update({n: f"array:{ns}" for ns, nodes in graph.array_nodes.items() for n in nodes})
    stage.update({n: "report" for n in graph.report_nodes})
    writer = {}
    for node in pipeline.nodes:
        for output in node.outputs:
            writer[output.split("@")[0]] = stage[node.name]
    problems = []
    for node in pipeline.nodes:
        for name in node.inputs:
            base = name.split("@")[0]
            if name.startswith("params:") or name == "parameters" or writer.get(base, stage[node.name]) == stage[node.name]:
                continue
            if not persisted(catalog, name):
                problems.append(f"{name} (written in the {writer[base]} job, read in the {stage[node.name]} job)")
    if problems:
        raise ValueError(
            "datasets passed between Slurm jobs must be saved to files, but these are in memory: "
            + ", ".join(sorted(set(problems))) + ": give them a catalog entry with a filepath"
        )


# ------------------------------------------------------------------ resume
def _outputs_exist(pipeline, nodes: list[str], catalog) -> list[str]:
    """The saved outputs of ``nodes`` that are not on disk."""
    chosen = set(nodes)
    absent = []
    for node in pipeline.nodes:
        if node.name in chosen:
            for output in node.outputs:
                if persisted(catalog, output) and not catalog.exists(output):
                    absent.append(output)
    return absent


def _variant_changed(name: str, catalog, params) -> str | None:
    """Why variant ``name`` on disk is not the configured one, or None when it is: the quantize
    node's own rule (:func:`fkr_kedro.quantization.api.stale_reason` on
    :func:`~fkr_kedro.quantization.api.variant_fingerprint`: spec, source weights, calibration
    texts, environment). The environment's machine-dependent part (device, thread count) is
    the job's to check on its node: the one recorded stands in for it here. None too when the
    shared job has yet to write the base model or the corpus (it runs anyway)."""
    from .quantization.api import expected_fingerprint, stale_reason
    from .run_config import active_variants

    spec = next((s for s in active_variants(params) if s.name == name), None)
    store = catalog.config_resolver.resolve_pattern(f"{name}.variant_store") or {}
    source = (catalog.config_resolver.resolve_pattern("base_model@dir") or {}).get("path")
    if spec is None or "path" not in store or not source or not Path(source).exists():
        return None
    if not catalog.exists("train_corpus"):
        return None
    stored = Path(store["path"])
    corpus = catalog.load("train_corpus").splitlines()
    return stale_reason(stored, expected_fingerprint(source, spec, corpus, stored))


def _shared_changed(catalog, params) -> str | None:
    """Why the shared job's trained base model is not the configured one (its recorded
    :func:`~fkr_kedro.modeling.train.training_fingerprint`: shape, training settings, corpus),
    or None when it is, or is not trained here (``base_model.kind`` other than train)."""
    from .modeling.train import training_fingerprint
    from .quantization.api import fingerprint_changes

    if params.base_model.kind != "train" or not catalog.exists("train_corpus"):
        return None
    if not catalog.exists("base_model_training"):
        return "no record of the base model's training"
    wanted = training_fingerprint(catalog.load("train_corpus").splitlines(), params.model_shape, params.training)
    changes = fingerprint_changes(catalog.load("base_model_training"), wanted)
    return f"the base model was trained with other settings ({'; '.join(changes)})" if changes else None


def _resume(plan, context) -> dict[str, Any]:
    """What to submit: the shared job unless its outputs are there, the array namespaces
    whose outputs are missing or whose variant fingerprint differs; the reasons of each."""
    graph, pipeline, catalog = plan["graph"], plan["pipeline"], context.catalog
    skipped, reasons = [], {}
    shared_missing = _outputs_exist(pipeline, graph.shared_nodes, catalog)
    trained = _shared_changed(catalog, plan["params"]) if "train_model" in graph.shared_nodes else None
    if trained:
        shared_missing.append(trained)
    for name in graph.first:
        why = _variant_changed(name, catalog, plan["params"])
        if why:
            shared_missing.append(f"{name} ({why})")
    array = []
    for name in graph.array:
        absent = _outputs_exist(pipeline, graph.array_nodes[name], catalog)
        why = None if absent else _variant_changed(name, catalog, plan["params"])
        if absent or why or shared_missing:
            array.append(name)
            reasons[name] = why or (f"missing {', '.join(absent[:3])}" if absent else "the shared job runs again")
        else:
            skipped.append(name)
    report_missing = _outputs_exist(pipeline, graph.report_nodes, catalog)
    return {
        "shared": bool(shared_missing),
        "shared_reason": ", ".join(shared_missing[:4]),
        "array": array,
        "reasons": reasons,
        "skipped": skipped,
        "report": bool(shared_missing or array or report_missing),
    }


# ------------------------------------------------------------------ MLflow and Slurm
def _slurm_config(loader):
    from kedro.config import MissingConfigException

    from .scaleout import load_slurm_config

    if "slurm" not in loader.config_patterns:
        loader.config_patterns.update({"slurm": ["slurm*", "slurm*/**"]})
    envs = [e for e in (getattr(loader, "base_env", "base"), loader.env) if e]
    source = " + ".join(f"{loader.conf_source}/{e}/slurm.yml" for e in dict.fromkeys(envs))
    try:
        data = loader["slurm"]
    except MissingConfigException:
        data = None
    except Exception as error:  # noqa: BLE001 - unreadable YAML, named with its file
        from .scaleout import SlurmConfigError

        raise SlurmConfigError(f"{source}: {error}") from None
    return load_slurm_config(data or None, source)


def _study_state(project: Path, env: str) -> tuple[Path, dict[str, Any]]:
    """``logs/slurm/<env>/study.json``: the study's parent run and its latest submission's jobs."""
    path = project / LOG_ROOT / env / "study.json"
    return path, (json.loads(path.read_text()) if path.exists() else {})


def _refuse_while_queued(project: Path, env: str) -> None:
    """A submission while the previous one's jobs are pending or running is refused, naming them."""
    from .scaleout import SlurmError, queued_jobs

    path, state = _study_state(project, env)
    queued = queued_jobs(state.get("jobs", []))
    if queued:
        raise SlurmError(
            f"the previous submission of this study ({path}) still has jobs queued or running: "
            f"{', '.join(queued)}. Wait until `squeue -j {','.join(state['jobs'])}` lists none, or cancel them "
            f"with `scancel {' '.join(state['jobs'])}`, then submit again"
        )


def _parent_run(project: Path, env: str, names: list[str], uri: str, experiment: str, params) -> str:
    """The study's parent run: the one of the previous submission of this env (resume),
    running again, unless a study parameter changed since (MLflow keeps a run's params
    fixed): then a new one, tagged with the previous one's id. A variant's own settings are
    logged on its nested runs, so a changed variant keeps the study's run."""
    from mlflow.tracking import MlflowClient

    from .run_config import active_parameters
    from .tracking import PREVIOUS_STUDY_TAG, changed_params, study_params

    client = MlflowClient(uri)
    state, previous = _study_state(project, env)
    replaced = None
    if previous.get("tracking_uri") == uri and previous.get("pipelines") == names:
        from mlflow.exceptions import MlflowException

        try:
            run = client.get_run(previous["parent_run_id"])
        except MlflowException:  # deleted from the store: a new study run
            run = None
        if run is not None and run.info.lifecycle_stage == "active":
            changed = changed_params(run.data.params, study_params(active_parameters()))
            if not changed:
                client.update_run(run.info.run_id, status="RUNNING")
                click.echo(f"MLflow: resuming the study's run {run.info.run_id}")
                return run.info.run_id
            replaced = run.info.run_id
            shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
            click.echo(f"MLflow: study parameters changed since the study's run {replaced} ({shown}): "
                       f"a new study run, tagged {PREVIOUS_STUDY_TAG}={replaced}")
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
    from .run_config import active_variants

    name, tags, _ = study_run(env, names, len(active_variants(params)))
    run = client.create_run(
        experiment_id, run_name=name,
        tags={STUDY_NAME_TAG: name, **tags, "fkr.submit": "slurm", **({PREVIOUS_STUDY_TAG: replaced} if replaced else {})},
    )
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps({"parent_run_id": run.info.run_id, "tracking_uri": uri, "pipelines": names}, indent=2))
    click.echo(f"MLflow: the study's run {run.info.run_id} ({uri})")
    return run.info.run_id


def _submit(project, env, names, kedro_args, plan, todo, slurm, uri, experiment, dry_run) -> None:
    import time

    from .run_config import active_training_seeds, active_variants
    from .scaleout import SlurmError, cancel_jobs, check_slurm, render_script, submit_script

    graph = plan["graph"]
    click.echo(f"Job graph of {'+'.join(names)} (env {env}), from the pipeline's namespaces:")
    click.echo(graph.describe())
    if not todo["shared"]:
        click.echo("skipping the shared job: its outputs are on disk")
    elif todo["shared_reason"]:
        click.echo(f"submitting the shared job: missing {todo['shared_reason']}")
    for name in todo["skipped"]:
        click.echo(f"skipping {name}: complete on disk (outputs there, same fingerprint)")
    for name in todo["array"]:
        click.echo(f"submitting {name}: {todo['reasons'][name]}")
    if not (todo["shared"] or todo["array"] or todo["report"]):
        click.echo("nothing to submit: every job's outputs are on disk")
        return
    uri = absolute_uri(uri, project)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    log_dir = (project / LOG_ROOT / env / stamp).resolve()
    done_dir = log_dir / "done"
    parent = "<created at submission>" if dry_run else _parent_run(project, env, names, uri, experiment, plan["params"])
    exports = {PARENT_RUN_ENV: parent, "MLFLOW_TRACKING_URI": uri}
    scripts = []
    if todo["shared"]:
        scripts.append(render_script(
            "shared", f"fkr-{env}-shared", slurm.resources("shared"), project, log_dir, slurm.setup,
            {**exports, SUBMIT_JOB_ENV: "shared"}, [*kedro_args, f"--nodes={','.join(graph.shared_nodes)}"],
            comment="shared stages: data preparation, the base model"
            + (f", and {', '.join(graph.first)} (the others read it)" if graph.first else ""),
        ))
    if todo["array"]:
        scripts.append(render_script(
            "variant", f"fkr-{env}-variant", slurm.resources("variant"), project, log_dir, slurm.setup,
            {**exports, SUBMIT_JOB_ENV: "variant"}, kedro_args, array=todo["array"], done_dir=done_dir,
            comment="one namespace (a variant or a model size) per array task",
        ))
    if todo["report"] and graph.report_nodes:
        scripts.append(render_script(
            "report", f"fkr-{env}-report", slurm.resources("report"), project, log_dir, slurm.setup,
            {**exports, SUBMIT_JOB_ENV: "report"}, [*kedro_args, f"--from-nodes={','.join(graph.report_roots)}"],
            done_dir=done_dir, missing_check=todo["array"],
            comment="what reads every namespace (summaries, figures, the report)",
        ))
    record = log_dir / "jobs.json"
    scripts.append(render_script(
        "final", f"fkr-{env}-end", slurm.resources("report"), project, log_dir, slurm.setup, {}, [],
        program=["kedro", "submit-end", str(record)],
        comment="after every job: ends the study's MLflow run (FINISHED when every variant's run finished), "
        "gives a cancelled task its FAILED run",
    ))
    for script in scripts:
        click.echo(f"\n# ---- {script.kind}.sbatch ----\n{script.text}", nl=False)
    if dry_run:
        click.echo("\n(dry run: nothing submitted)")
        return
    check_slurm([slurm.resources("report" if s.kind == "final" else s.kind).partition for s in scripts])
    done_dir.mkdir(parents=True, exist_ok=True)
    for name in todo["skipped"]:
        (done_dir / f"{name}.done").touch()
    ids: dict[str, str] = {}
    every: list[str] = []  # every job id, the final job's too
    variants = {spec.name for spec in active_variants(plan["params"])}
    study_variants = [n for n in [*graph.first, *graph.array] if n in variants]
    # A further training seed's task holds one nested run per variant (seed<k>.<variant>).
    seed_tasks = set(active_training_seeds(plan["params"]).values())
    study_variants += [f"{ns}.{v}" for ns in graph.array if ns in seed_tasks for v in sorted(variants)]
    submitted_at = int(time.time() * 1000)
    for script in scripts:
        path = log_dir / f"{script.kind}.sbatch"
        path.write_text(script.text)
        if script.kind == "final":
            submitted = {n: ids["shared"] for n in graph.first if n in variants and "shared" in ids}
            submitted.update({n: f"{ids['variant']}_{i}" for i, n in enumerate(todo["array"]) if n in variants})
            submitted.update({f"{n}.{v}": f"{ids['variant']}_{i}" for i, n in enumerate(todo["array"])
                              if n in seed_tasks for v in sorted(variants)})
            record.write_text(json.dumps({
                "parent_run_id": parent, "tracking_uri": uri, "jobs": ids, "array": todo["array"],
                "variants": study_variants, "submitted": submitted, "submitted_at_ms": submitted_at,
            }, indent=2))
            dependency = ("afterany:" + ":".join(ids.values())) if ids else None
        elif script.kind == "variant":
            dependency = f"afterok:{ids['shared']}" if "shared" in ids else None
        elif script.kind == "report":
            after = [f"afterany:{ids['variant']}"] if "variant" in ids else []
            after += [f"afterok:{ids['shared']}"] if "shared" in ids else []
            dependency = ",".join(after) or None
        else:
            dependency = None
        try:
            job = submit_script(path, dependency)
        except SlurmError as error:
            _refused(error, script.kind, ids, parent, uri, cancel_jobs)
        if script.kind != "final":
            ids[script.kind] = job
        every.append(job)
        click.echo(f"submitted {script.kind}: job {job}" + (f" ({dependency})" if dependency else ""))
        state, study = _study_state(project, env)
        state.write_text(json.dumps({**study, "jobs": every, "log_dir": str(log_dir)}, indent=2))
    click.echo(f"scripts and logs: {log_dir}")
    from .run_config import kedro_command  # the study's --env and --params

    again = [f"--pipelines={','.join(names)}"] if names != ["__default__"] else []
    click.echo(f"after a failure, fix it and submit again: {kedro_command(*again, command='submit')}")


def _refused(error: Exception, kind: str, ids: dict[str, str], parent: str, uri: str, cancel_jobs) -> None:
    """sbatch refused a job: the jobs submitted before it are cancelled (they would run without
    the rest) and the study's run ends FAILED with the reason."""
    from mlflow.tracking import MlflowClient

    from .scaleout import SlurmError
    from .tracking import fail_run

    cancel_jobs(ids.values())
    cancelled = f"; cancelled the jobs submitted before it ({', '.join(ids.values())})" if ids else ""
    reason = f"sbatch refused the {kind} job: {error}{cancelled}"
    fail_run(MlflowClient(uri), parent, reason)
    raise SlurmError(f"{reason}. The study's MLflow run {parent} ended FAILED; fix slurm.yml and submit again")
