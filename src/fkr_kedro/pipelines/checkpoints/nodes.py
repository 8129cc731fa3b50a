"""Nodes of the checkpoints pipeline."""

from __future__ import annotations

import logging

import pandas as pd

from fkr_kedro.capacity.checkpoints import (
    damage_direction,
    damage_table,
    run_checkpoint_study,
)
from fkr_kedro.capacity.config import CapacitySettings
from fkr_kedro.reporting.figures import damage_along_training
from fkr_kedro.scaling.sweep import PointCache


def measure_checkpoints(capacity: CapacitySettings, runs: PointCache) -> pd.DataFrame:
    """Train each seed with checkpoints (or reuse them) and measure every format on each."""
    return run_checkpoint_study(capacity.checkpoints, runs.directory)


def summarize_damage(checkpoint_points: pd.DataFrame, capacity: CapacitySettings) -> tuple[pd.DataFrame, dict, object]:
    damage = damage_table(checkpoint_points, capacity.checkpoints.confidence)
    direction = damage_direction(damage)
    logging.getLogger(__name__).info("Damage along training:\n  %s", "\n  ".join(direction["statements"]))
    bits = {spec.name: spec.bits for spec in capacity.checkpoints.specs()}
    return damage, direction, damage_along_training(damage, bits)
