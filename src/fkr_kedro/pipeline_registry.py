"""Project pipelines."""

from __future__ import annotations

import pkgutil
import re

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline


# Run only when asked for by name: the scaling and capacity sweeps train several models
# (~54 and ~40-72 minutes, docs/scaling.md and docs/capacity.md), checkpoints quantizes every
# training checkpoint, and export writes the prompts as an lm-evaluation-harness task folder.
NOT_IN_DEFAULT = ("scaling", "capacity", "checkpoints", "export")
# The study of one trained model: with several training seeds (``training_seeds``) it runs once
# per seed, each seed but ``training.seed`` in its own namespace ``seed<k>``.
PER_TRAINED_MODEL = ("train", "quantize", "evaluate", "probe")


def register_pipelines() -> dict[str, Pipeline]:
    """Every pipeline under ``pipelines/`` by its folder name; ``__default__`` runs the study
    (all of them but those in ``NOT_IN_DEFAULT``)."""
    try:
        pipelines = find_pipelines(raise_errors=True)
    except ImportError as error:
        unknown = _unknown_pipeline(error)
        if unknown is None:
            raise
        raise unknown from None
    pipelines.update(per_training_seed(pipelines))
    pipelines["__default__"] = sum(
        (p for name, p in pipelines.items() if name not in NOT_IN_DEFAULT), Pipeline([])
    )
    return pipelines


def _unknown_pipeline(error: ImportError) -> ValueError | None:
    """``kedro run --pipelines=NAME`` with no pipeline NAME makes find_pipelines fail with an
    import error naming the module it looked for: say so, with the pipelines there are."""
    from . import pipelines as package

    found = re.search(rf"'{re.escape(package.__name__)}\.([^']+)'", str(error))
    existing = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.ispkg)
    if error.__cause__ is not None or found is None or found[1] in existing:
        return None  # a pipeline that exists but fails to import: its own error says why
    return ValueError(
        f"no pipeline named {found[1]!r}: the registered pipelines are {', '.join(['__default__', *existing])} "
        f"(`kedro run --pipelines=a,b` runs several)"
    )


def per_training_seed(pipelines: dict[str, Pipeline]) -> dict[str, Pipeline]:
    """The pipelines of :data:`PER_TRAINED_MODEL`, each node tagged with its training seed
    (``training_seed_<k>``), plus one namespaced copy per further training seed: it reads the
    world and prompts of data_prep and the parameters as they are, trains its own model with
    its seed and writes everything else under ``seed<k>.`` (the catalog's copies of every
    entry, ``run_config.seed_catalog``)."""
    from fkr_kedro.pipelines.train.pipeline import create_pipeline as train_pipeline
    from fkr_kedro.run_config import active_training_seeds, study_parameters, training_seed_tag

    params = study_parameters()
    seeds = active_training_seeds(params)
    shared = set(pipelines["data_prep"].all_outputs()) if "data_prep" in pipelines else set()
    out = {}
    for name in PER_TRAINED_MODEL:
        if name not in pipelines:
            continue
        copies = [pipelines[name].tag(training_seed_tag(params.training.seed))]
        for seed, namespace in seeds.items():
            pipeline = train_pipeline(training_seed=seed) if name == "train" else pipelines[name]
            free = pipeline.inputs()
            copies.append(Pipeline(
                pipeline, namespace=namespace, inputs={i for i in free if i.split("@")[0] in shared},
                parameters={i for i in free if i.startswith("params:")}, tags=[training_seed_tag(seed)],
            ))
        out[name] = sum(copies, Pipeline([]))
    return out
