"""Nodes of the capacity pipeline: the sweep (resumable point by point), the saturation
table and conclusion, and the capacity curves."""

from __future__ import annotations

import logging

import pandas as pd

from fkr_kedro.capacity.config import CapacitySettings
from fkr_kedro.capacity.study import capacity_conclusion, run_capacity, saturation_table
from fkr_kedro.reporting.figures import capacity_curves
from fkr_kedro.scaling.sweep import PointCache

log = logging.getLogger(__name__)


def sweep_capacity(capacity: CapacitySettings, models: PointCache, cache: PointCache) -> pd.DataFrame:
    """Every (exposures, size, load, format) point; trained models and cached points are
    reused (``models`` and ``cache`` are the folders they live in)."""
    points, done = run_capacity(capacity, models.directory, cache.directory)
    log.info("Capacity sweep: %d points computed, %d read from %s", len(done["computed"]), len(done["reused"]),
             cache.directory)
    return points


def summarize_capacity(capacity_points: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    saturation = saturation_table(capacity_points)
    conclusion = capacity_conclusion(saturation)
    log.info("Capacity:\n  %s", "\n  ".join(conclusion["statements"]))
    return saturation, conclusion


def plot_capacity_curves(capacity_points: pd.DataFrame):
    return capacity_curves(capacity_points)
