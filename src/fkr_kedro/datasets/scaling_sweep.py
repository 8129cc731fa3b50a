"""Kedro datasets of the scaling sweep (the library is :mod:`fkr_kedro.scaling`).

* :class:`ModelStoreDataset` loads where a model is stored, for the training node's
  keep-check (:func:`~fkr_kedro.scaling.sweep.train_or_keep`).
* :class:`ScalingModelDataset` saves what that node returns (a
  :class:`~fkr_kedro.scaling.sweep.TrainedDirectory`: a staging folder, checked, then moved
  into place; or the stored model, kept) and loads the folder as a
  :class:`~fkr_kedro.scaling.sweep.TrainedModel` (its path and training record).
* :class:`PointCacheDataset` loads the :class:`~fkr_kedro.scaling.sweep.PointCache` of one
  model size (a folder of one JSON file per point).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from ..modeling.storage import is_model_directory, replace_with_staging
from ..scaling.sweep import TRAINING_FILE, PointCache, TrainedDirectory, TrainedModel
from .integrity import weights_problem


class ModelStoreDataset(AbstractDataset[None, Path]):
    """Read-only: where a model is stored (whether or not one is there yet)."""

    def __init__(self, path: str, metadata: dict | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> Path:
        return self._path

    def save(self, data: None) -> None:
        raise DatasetError(f"{self._path} is written through the model's own dataset")

    def _exists(self) -> bool:
        return True  # an empty store is a store: the node trains into it

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class ScalingModelDataset(AbstractDataset[TrainedDirectory, TrainedModel]):
    def __init__(self, path: str, metadata: dict | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def save(self, trained: TrainedDirectory) -> None:
        if not isinstance(trained, TrainedDirectory):
            raise DatasetError(f"{self._path}: saved from what the training node returns, not {type(trained).__name__}")
        if trained.kept:
            if Path(trained.path).resolve() != self._path.resolve():
                raise DatasetError(f"{self._path}: the kept model is at {trained.path}, not here")
            return
        problem = None if (trained.path / TRAINING_FILE).is_file() else f"no {TRAINING_FILE}"
        problem = problem or weights_problem(trained.path)
        if problem is not None:
            shutil.rmtree(trained.path, ignore_errors=True)
            raise DatasetError(f"the new model for {self._path} in {trained.path} is not saved: {problem}")
        replace_with_staging(trained.path, self._path, manifest=False)

    def load(self) -> TrainedModel:
        record = self._path / TRAINING_FILE
        if not (is_model_directory(self._path) and record.exists()):
            raise DatasetError(f"no trained scaling model at {self._path}: run `kedro run --pipeline=scaling` first")
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
