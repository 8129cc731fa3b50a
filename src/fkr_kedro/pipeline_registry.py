"""Project pipelines."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline


# Run only when asked for by name: the scaling sweep trains several models (~30 minutes).
NOT_IN_DEFAULT = ("scaling",)


def register_pipelines() -> dict[str, Pipeline]:
    """Every pipeline under ``pipelines/`` by its folder name; ``__default__`` runs the study
    (all of them but those in ``NOT_IN_DEFAULT``)."""
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(
        (p for name, p in pipelines.items() if name not in NOT_IN_DEFAULT), Pipeline([])
    )
    return pipelines
