"""The validated parameters of the run being set up, for pipelines generated from them.

Why this module exists: the quantize, evaluate, probe and report pipelines hold one
namespaced copy per variant listed in ``parameters`` (and scaling one per model size), so
building them needs the parameters of the active environment (``--env``, ``--params``).
Kedro builds pipelines in ``register_pipelines()``, which receives no context or config
loader, so the hook in ``hooks.py`` records the new context's loader here. Outside a
session (a test that imports a pipeline, ``kedro registry list``) the configuration is read
from ``./conf`` in the environment named by ``KEDRO_ENV`` (default ``local``).
"""

from __future__ import annotations

import os
from pathlib import Path

from kedro.config import AbstractConfigLoader, OmegaConfigLoader

from .parameters import StudyParameters, validate_parameters
from .quantization.variants import VariantError, VariantSpec, expand_draws, validate_variants

_active_loader: AbstractConfigLoader | None = None

# Every output of a study (tables, models, reports) lives under its environment's own folder,
# so two studies never overwrite each other: the default environment keeps ``data/``, any
# other environment NAME writes ``data/NAME/`` (the catalog's ``${study_root:}``). Raw
# downloads (``data/01_raw``, read-only inputs) stay shared.
DATA_ROOT = "data"
DEFAULT_ENV = "local"


def study_root(env: str | None) -> str:
    """The output folder of environment ``env`` (relative to the project root)."""
    return DATA_ROOT if not env or env == DEFAULT_ENV else f"{DATA_ROOT}/{env}"


class StudyConfigLoader(OmegaConfigLoader):
    """Kedro's ``OmegaConfigLoader`` plus the ``${study_root:}`` resolver, bound to this
    loader's environment (OmegaConf resolvers are global and Kedro's ``custom_resolvers`` see
    no loader, so it is registered again before each read, as Kedro does for
    ``${runtime_params:}``). ``settings.CONFIG_LOADER_CLASS``; a new environment needs no edits.

    ``${project_root:}`` is the project's absolute path (the folder holding ``conf/``): the
    default MLflow store is ``sqlite:///${project_root:}/mlflow.db``, because MLflow caches a
    store per URI string, so a relative one would reuse the first project's store (and its
    artifact folder) for every later project in the same process (notebooks, tests)."""

    def __getitem__(self, key: str):
        from omegaconf import OmegaConf

        root = study_root(self.env or self.default_run_env)
        project = Path(self.conf_source).resolve().parent.as_posix()
        OmegaConf.register_resolver("study_root", lambda: root, replace=True)
        OmegaConf.register_resolver("project_root", lambda: project, replace=True)
        config = super().__getitem__(key)
        if key == "catalog":
            seeds = training_seed_namespaces(self._raw_training_seeds()).values()
            config = {**config, **{k: v for ns in seeds for k, v in seed_catalog(config, ns, root).items()}}
        return config

    def _raw_training_seeds(self) -> tuple[list[int], int]:
        """``training_seeds`` and ``training.seed`` as configured; unreadable values count as
        none here (the parameters' validation names them when the pipelines are built)."""
        from .parameters import seed_list

        try:
            params = super().__getitem__("parameters")
            seeds = seed_list(params.get("training_seeds"), "training_seeds")
            main = int((params.get("training") or {}).get("seed", 0))
            return ([int(seed) for seed in seeds] if isinstance(seeds, list) else [], main)
        except (KeyError, ValueError, TypeError):
            return [], 0


# The world and its prompts (data_prep's folders) are the same for every training seed; every
# other output of a seed lives under its own folder (models, scores, probes, reports).
SHARED_BY_SEEDS = ("01_raw", "02_intermediate", "05_model_input")
SEED_NAMESPACE_PREFIX = "seed"


def training_seed_namespaces(seeds: tuple[list[int] | None, int]) -> dict[int, str]:
    """``{seed: namespace}`` of the training seeds other than ``training.seed``, in order:
    ``seeds`` is (``training_seeds``, ``training.seed``). The model of ``training.seed`` keeps
    the study's own names (no namespace), so adding seeds reuses everything already run."""
    listed, main = seeds
    return {seed: f"{SEED_NAMESPACE_PREFIX}{seed}" for seed in (listed or []) if seed != main}


def seed_catalog(catalog: dict, namespace: str, root: str) -> dict:
    """The catalog entries of training-seed namespace ``namespace``: every entry (dataset
    factories included) as ``<namespace>.<name>``, its paths under ``<root>/<namespace>/``
    instead of ``<root>/``, except the folders the seeds share (:data:`SHARED_BY_SEEDS`)."""

    def moved(value):
        if isinstance(value, dict):
            return {k: moved(v) for k, v in value.items()}
        if isinstance(value, list):
            return [moved(v) for v in value]
        if isinstance(value, str) and value.startswith(f"{root}/"):
            rest = value.removeprefix(f"{root}/")
            if not rest.startswith(SHARED_BY_SEEDS):
                return f"{root}/{namespace}/{rest}"
        return value

    def rebuilt(entry):
        # The rebuild hint of a moved file names the seed's nodes (``--namespaces=seed1.<variant>``).
        if not isinstance(entry, dict) or not isinstance(entry.get("rebuild"), str) or moved(entry) == entry:
            return moved(entry)
        hint = entry["rebuild"]
        hint = (hint.replace("--namespaces=", f"--namespaces={namespace}.") if "--namespaces=" in hint
                else f"{hint} --namespaces={namespace}")
        return {**moved(entry), "rebuild": hint}

    return {f"{namespace}.{name}": rebuilt(entry) for name, entry in catalog.items() if not name.startswith("_")}


def set_active_config_loader(loader: AbstractConfigLoader | None) -> None:
    global _active_loader
    _active_loader = loader


def _loader() -> AbstractConfigLoader:
    if _active_loader is not None:
        return _active_loader
    return StudyConfigLoader(
        conf_source=str(Path.cwd() / "conf"), env=os.environ.get("KEDRO_ENV") or None, base_env="base",
        default_run_env=DEFAULT_ENV,
    )


def study_parameters() -> StudyParameters:
    """Every parameter of the active configuration, validated (see :mod:`fkr_kedro.parameters`):
    a bad key or value raises one error naming it and its file, before anything runs."""
    loader = _loader()
    envs = tuple(
        dict.fromkeys(
            env for env in (getattr(loader, "base_env", "base"), loader.env or getattr(loader, "default_run_env", ""))
            if env
        )
    )
    return validate_parameters(loader["parameters"], loader.conf_source, envs, loader.runtime_params)


def active_variants(params: StudyParameters | None = None) -> list[VariantSpec]:
    """The variants of the active configuration as validated specs, in the listed order.

    ``variants`` in parameters maps each variant's name (its Kedro namespace) to its
    settings. Everything that can be checked without loading a model is checked here, when
    the pipelines are built, so a bad variant stops the run before anything is trained or
    loaded; the quantize step checks group sizes against the real model again. A calibrated
    variant comes once per calibration draw (``quantize.calibration_seeds``,
    :func:`~fkr_kedro.quantization.variants.expand_draws`), each draw its own namespace.
    """
    params = params or study_parameters()
    specs = configured_variants(params)
    missing = set(missing_variants(params))
    specs = [spec for spec in specs if spec.name not in missing]
    shape = params.model_shape
    # A loaded model's widths are not in parameters: quantize() checks its config.
    widths = [shape.hidden_size, shape.intermediate_size] if params.base_model.kind == "train" else []
    return validate_variants(specs, widths)


def configured_variants(params: StudyParameters) -> list[VariantSpec]:
    """Every configured variant, each calibrated one once per calibration draw, unvalidated."""
    specs = []
    for name, settings in params.variants.items():
        try:
            specs.append(VariantSpec(name=name, **settings))
        except ValueError as error:  # pydantic's ValidationError is a ValueError
            raise VariantError(f"variant {name!r}: {error}") from None
    return expand_draws(specs, params.quantize.calibration_seeds)


def active_training_seeds(params: StudyParameters | None = None) -> dict[int, str]:
    """``{seed: namespace}`` of the configured training seeds other than ``training.seed``
    (``training_seeds`` in parameters_train.yml; empty with one seed)."""
    params = params or study_parameters()
    return training_seed_namespaces((params.training_seeds, params.training.seed))


def training_seed_tag(seed: int) -> str:
    """The tag of every node of training seed ``seed``'s study (train, quantize, evaluate,
    probe): ``kedro run --tags=training_seed_0`` runs the study of ``training.seed`` 0 alone."""
    return f"training_seed_{seed}"


def active_reference(params: StudyParameters | None = None) -> str:
    """The variant every other one is compared against (``report.reference`` in
    parameters_report.yml): the probe and report pipelines and ``kedro submit`` read it."""
    params = params or study_parameters()
    return params.report.reference


# Set by the report job of `kedro submit` (fkr_kedro.scaleout): the namespaces whose array
# task did not succeed, separated by spaces. The pipelines are built without them and the
# report names them.
MISSING_NAMESPACES_ENV = "FKR_MISSING_NAMESPACES"


def missing_variants(params: StudyParameters | None = None) -> list[str]:
    """The configured variants named in ``FKR_MISSING_NAMESPACES`` (the report job of a
    submitted study whose array task for them failed or was cancelled), in configured order."""
    named = os.environ.get(MISSING_NAMESPACES_ENV, "").split()
    if not named:
        return []
    params = params or study_parameters()
    return [spec.name for spec in configured_variants(params) if spec.name in named]


def bind(func, **kwargs):
    """``functools.partial`` that keeps ``func``'s name and annotations, for nodes specialised
    per variant (Kedro names nodes, kedro-viz shows functions by it and converts ``params:``
    inputs from the type hints)."""
    import inspect
    from functools import partial, update_wrapper

    wrapper = update_wrapper(partial(func, **kwargs), func)
    # inspect.signature follows __wrapped__ to ``func`` and would list the bound arguments
    # too; Kedro maps a node's inputs onto that signature (its params: type conversion
    # included), so the wrapper states its own.
    signature = inspect.signature(func)
    wrapper.__signature__ = signature.replace(
        parameters=[p for name, p in signature.parameters.items() if name not in kwargs]
    )
    return wrapper


def active_parameters() -> dict:
    """The merged parameters as configured (plain values, for logging), not validated."""
    return _loader()["parameters"]


def active_env() -> str:
    """The environment of the active configuration (``--env``; ``local`` by default)."""
    loader = _loader()
    return loader.env or getattr(loader, "default_run_env", "") or "local"


def active_study_root() -> Path:
    """The output folder of the active study (``data`` or ``data/<env>``), relative to the
    project root."""
    return Path(study_root(active_env()))


def kedro_command(*arguments: str, command: str = "run") -> str:
    """A ``kedro`` command line for the study this process runs: ``kedro run`` with
    ``arguments`` plus the ``--env`` and ``--params`` the study was started with, so a command
    the project prints (a rebuild hint, a resubmission) acts on the same study's files and
    settings. The default environment adds no ``--env``."""
    import shlex

    loader = _loader()
    parts = ["kedro", command, *arguments]
    env = active_env()
    if env != getattr(loader, "default_run_env", "local"):
        parts.append(f"--env={env}")
    runtime = dict(getattr(loader, "runtime_params", None) or {})
    if runtime:
        parts.append("--params=" + ",".join(f"{key}={value}" for key, value in _flatten(runtime)))
    return " ".join(shlex.quote(part) if part != command else part for part in parts)


def _flatten(values: dict, prefix: str = ""):
    for key, value in values.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value
