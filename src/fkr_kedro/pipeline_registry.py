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
