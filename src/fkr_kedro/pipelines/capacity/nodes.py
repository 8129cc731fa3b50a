"""Nodes of the capacity pipeline: the sweep (resumable point by point), the saturation
table and conclusion, and the capacity curves."""

from __future__ import annotations

import logging

import pandas as pd

from fkr_kedro.capacity.config import CapacitySettings
from fkr_kedro.capacity.study import capacity_conclusion, run_capacity, saturation_table
from fkr_kedro.pipelines.wiring import by_namespace
from fkr_kedro.reporting.figures import capacity_curves
from fkr_kedro.scaling.sweep import PointCache

log = logging.getLogger(__name__)


def sweep_capacity(capacity: CapacitySettings, models: PointCache, cache: PointCache, size: str) -> pd.DataFrame:
    """Every (exposures, load, format) point of one model size; trained models and cached
    points are reused (``models`` and ``cache`` are the folders they live in)."""
    points, done = run_capacity(capacity, models.directory, cache.directory, sizes=[size])
    log.info("Capacity sweep of %s: %d points computed, %d read from %s", size, len(done["computed"]),
             len(done["reused"]), cache.directory)
    return points


def gather_capacity_points(**points_by_size: pd.DataFrame) -> pd.DataFrame:
    """The sizes' points in one table (inputs ``capacity_<size>.capacity_points``)."""
    return pd.concat(by_namespace(points_by_size, "capacity_points").values(), ignore_index=True)


def summarize_capacity(capacity_points: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    saturation = saturation_table(capacity_points)
    conclusion = capacity_conclusion(saturation)
    log.info("Capacity:\n  %s", "\n  ".join(conclusion["statements"]))
    return saturation, conclusion


def plot_capacity_curves(capacity_points: pd.DataFrame):
    return capacity_curves(capacity_points)
