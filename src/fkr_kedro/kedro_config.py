"""Reading the Kedro project's configuration, for the hooks and the project commands alike:
mlflow.yml through the config loader, the study's run name, catalog entries and where they
write, the project's pipelines, and the environment contract between `kedro submit` and its
jobs. One home, so that ``kedro run`` and ``kedro submit`` read them the same way."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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


# ------------------------------------------------------------------ mlflow.yml
def mlflow_conf(loader) -> dict[str, Any]:
    """The merged ``mlflow.yml`` of the run's environment, read as kedro-mlflow reads it."""
    from kedro.config import MissingConfigException

    if "mlflow" not in loader.config_patterns:
        loader.config_patterns.update({"mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"]})
    try:
        return dict(loader["mlflow"] or {})
    except MissingConfigException:
        return {}


def tracking_uri(conf: dict[str, Any], default: str | None = None) -> str | None:
    """The tracking store of ``mlflow.yml`` (``server.mlflow_tracking_uri``), else
    ``MLFLOW_TRACKING_URI``, else ``default``."""
    return (conf.get("server") or {}).get("mlflow_tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI") or default


def experiment_name(conf: dict[str, Any]) -> str:
    """The experiment of ``mlflow.yml`` (``tracking.experiment.name``), else the package's name."""
    name = ((conf.get("tracking") or {}).get("experiment") or {}).get("name")
    return str(name or __package__)


def mlflow_target(loader) -> tuple[str, str]:
    """``(tracking uri, experiment)`` of the environment's mlflow.yml."""
    conf = mlflow_conf(loader)
    return str(tracking_uri(conf, "mlruns")), experiment_name(conf)


def absolute_uri(uri: str, project: Path) -> str:
    """A relative SQLite or file store made absolute (jobs and commands printed for later
    run in the project, but say so)."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{(project / uri[len('sqlite:///'):]).resolve()}"
    if "://" not in uri:
        return str((project / uri).resolve())
    return uri


# ------------------------------------------------------------------ the study's run
def source_description(parameters: dict[str, Any]) -> dict[str, str]:
    """The model and the dataset every variant derives from, as short params, from
    ``base_model`` (parameters_train.yml) and ``knowledge`` (parameters_data_prep.yml)."""
    from .reporting.describe import describe_dataset, describe_model

    return {
        "model": describe_model(parameters.get("base_model"), parameters.get("model_shape")),
        "dataset": describe_dataset(parameters.get("knowledge"), parameters.get("world")),
    }


def sweep_description(pipelines: list[str]) -> tuple[dict[str, str], int] | None:
    """For a run of the scaling or capacity sweep alone: its model sizes, its world(s) and its
    quantized points a model, instead of the default study's model and variants."""
    from .reporting.describe import describe_dataset
    from .run_config import study_parameters

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


def study_run(env: str, pipelines: list[str], n_variants: int | None = None) -> tuple[str, dict[str, str], dict[str, str]]:
    """``(name, tags, source)`` of the study's MLflow run for ``kedro run`` and ``kedro
    submit`` alike: a sweep names its sizes and worlds, else the base model, the knowledge
    source and ``n_variants`` (default: every configured variant)."""
    from .run_config import active_parameters, active_variants
    from .tracking import study_run_name

    source = source_description(active_parameters())
    sweep = sweep_description(pipelines)
    if sweep is not None:  # a sweep trains its own models on its own worlds: name those
        source, n_variants = sweep
    elif n_variants is None:
        n_variants = len(active_variants())
    name = study_run_name(env, pipelines, source["model"], source["dataset"], n_variants)
    tags = {"pipeline": "+".join(pipelines), "kedro_env": env, "model": source["model"],
            "knowledge_source": source["dataset"], "n_variants": str(n_variants)}
    return name, tags, source


# ------------------------------------------------------------------ the catalog
def catalog_entry(catalog, name: str) -> dict[str, Any]:
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


def catalog_filepath(catalog, name: str) -> str | None:
    """Where a dataset writes, from its catalog entry (``filepath`` or ``path``; Kedro makes
    relative ones absolute from the project)."""
    entry = catalog_entry(catalog, name)
    value = entry.get("filepath") or entry.get("path")
    return None if value is None else str(value)


def persisted(catalog, name: str) -> bool:
    """Whether the dataset ``name`` is kept beyond the run (not a MemoryDataset)."""
    from kedro.io import MemoryDataset

    try:
        dataset = catalog.get(name)
    except Exception:  # noqa: BLE001 - a name no entry or factory resolves: not a file
        return False
    return dataset is not None and not isinstance(dataset, MemoryDataset)


def declarations(pipeline, catalog) -> dict[str, Any]:
    """``{dataset: Declaration}`` for every dataset of the pipeline whose catalog entry
    declares ``metadata: {fkr_tracking: ...}`` (dataset factories included)."""
    from .tracking import parse_declaration

    out = {}
    for name in pipeline.datasets():
        declaration = parse_declaration(name, catalog_entry(catalog, name).get("metadata"))
        if declaration is not None:
            out[name] = declaration
    return out


def _configured(catalog, name: str) -> bool:
    """Whether a catalog file (an entry or a factory pattern) configures ``name``, as opposed
    to the in-memory default Kedro gives every other dataset."""
    resolver = getattr(catalog, "config_resolver", None)
    if resolver is None:
        return True
    # Kedro's own default (`{default}`: MemoryDataset) is a runtime pattern, not configuration.
    return (
        name in resolver.config
        or resolver.match_dataset_pattern(name) is not None
        or resolver.match_user_catch_all_pattern(name) is not None
    )


def unconfigured_outputs(pipeline, catalog) -> list[str]:
    """The pipeline's outputs that no catalog entry or pattern configures and that therefore
    fall back to a MemoryDataset: never written, never tracked. An output meant to stay in
    memory is declared so (``type: MemoryDataset``). Objects added to the catalog by code
    (tests, notebooks) count as configured."""
    from kedro.io import MemoryDataset

    missing = []
    for name in sorted(pipeline.all_outputs()):
        if _configured(catalog, name):
            continue
        try:
            if name in catalog and not isinstance(catalog.get(name), MemoryDataset):
                continue  # a dataset object handed to the catalog
        except Exception:  # noqa: BLE001 - resolved below as unconfigured
            pass
        missing.append(name)
    return missing


class UnconfiguredOutputError(ValueError):
    """A pipeline output has no catalog entry: it would silently stay in memory."""


def check_outputs_configured(pipeline, catalog, conf_source: str | None = None, env: str | None = None) -> None:
    """Before a run: every output of the pipeline has a catalog entry (a file, or a declared
    ``MemoryDataset``), so that removing an entry from catalog.yml is an error naming it
    instead of a table that silently stops being written."""
    missing = unconfigured_outputs(pipeline, catalog)
    if not missing:
        return
    where = f"{conf_source or 'conf'}/{'base'}/catalog.yml"
    shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
    raise UnconfiguredOutputError(
        f"{len(missing)} output(s) of this run have no catalog entry and would only be kept in memory "
        f"(never written, never tracked): {shown}. Add an entry for each to {where} "
        f"(or a catalog_*.yml beside it{f', or conf/{env}/ for this environment' if env and env not in ('base', 'local') else ''}); "
        "an output meant to stay in memory is declared as `type: MemoryDataset`"
    )


# ------------------------------------------------------------------ the pipelines
def project_pipelines() -> dict:
    """Every pipeline of the project, by name (``__default__`` left out), from Kedro's
    registry. ``kedro run --pipelines=NAME`` loads only the pipelines it runs into the
    registry; the others, needed to name who writes a missing input, are built here, only
    when asked for."""
    import importlib
    import pkgutil

    from kedro.framework.project import pipelines as registry

    from . import pipelines as package

    found = {name: pipe for name, pipe in registry.items() if name != "__default__"}
    for module in sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.ispkg):
        if module in found:
            continue
        try:
            found[module] = importlib.import_module(f"{package.__name__}.{module}").create_pipeline()
        except Exception:  # a pipeline that cannot be built here (its own error shows when it runs)
            continue
    return dict(sorted(found.items()))
