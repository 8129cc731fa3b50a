"""Kedro datasets of the scaling sweep (the library is :mod:`fkr_kedro.scaling`).

* :class:`ScalingModelDataset` saves what the training node returns (a
  :class:`~fkr_kedro.scaling.sweep.TrainedDirectory`: a staging folder, checked, then moved
  into place; or the stored model, kept) and loads the folder as a
  :class:`~fkr_kedro.scaling.sweep.TrainedModel` (its path and training record).
* :class:`PointCacheDataset` loads the :class:`~fkr_kedro.scaling.sweep.PointCache` of one
  model size (a folder of one JSON file per point).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from ..modeling.storage import is_model_directory
from ..scaling.sweep import TRAINING_FILE, PointCache, TrainedDirectory, TrainedModel
from .integrity import save_made_model
from ..run_config import kedro_command


class ScalingModelDataset(AbstractDataset[TrainedDirectory, TrainedModel]):
    def __init__(self, path: str, metadata: dict | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def save(self, trained: TrainedDirectory) -> None:
        if not isinstance(trained, TrainedDirectory):
            raise DatasetError(f"{self._path}: saved from what the training node returns, not {type(trained).__name__}")
        save_made_model(trained, self._path, TRAINING_FILE, "model")

    def load(self) -> TrainedModel:
        record = self._path / TRAINING_FILE
        if not (is_model_directory(self._path) and record.exists()):
            raise DatasetError(f"no trained scaling model at {self._path}: run `{kedro_command('--pipeline=scaling')}` first")
        return TrainedModel(self._path, json.loads(record.read_text()))

    def _exists(self) -> bool:
        return is_model_directory(self._path) and (self._path / TRAINING_FILE).exists()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class PointCacheDataset(AbstractDataset[None, PointCache]):
    """Read-only in the catalog: the sweep writes each point itself, atomically, as it goes."""

    def __init__(self, path: str, metadata: dict | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> PointCache:
        return PointCache(self._path)

    def save(self, data: None) -> None:
        raise DatasetError(f"{self._path} is written point by point by the sweep, not saved whole")

    def _exists(self) -> bool:
        # A cache holds what is computed: it exists once a point is in it. Loading an absent
        # one is fine (an empty cache): the sweep starts it.
        return self._path.is_dir() and any(self._path.glob("*.json"))

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
