"""Kedro datasets for the probe pipeline's safetensors files (no pickles).

* :class:`ActivationCacheDataset`: an :class:`~fkr_kedro.analysis.capture.ActivationCache`
  as ONE safetensors file (``ActivationCache.save`` / ``ActivationCache.load``);
* :class:`AttributionScoresDataset`: :class:`~fkr_kedro.analysis.neurons.AttributionScores`
  (``AttributionScores.save`` / ``AttributionScores.load``).

Both write atomically (``modeling.storage.staged_file``: a temporary file beside the target, then a rename), so an
interrupted run never leaves a truncated file that a later run would load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from fkr_kedro.analysis.capture import ActivationCache
from fkr_kedro.analysis.neurons import AttributionScores
from fkr_kedro.modeling.storage import staged_file


class _SafetensorsDataset(AbstractDataset):
    _kind = "file"
    _cls: Any = None
    _producer = "the pipeline that writes it"

    def __init__(self, filepath: str, metadata: dict | None = None):
        self._filepath = Path(filepath)
        self.metadata = metadata

    def load(self):
        if not self._filepath.exists():
            raise DatasetError(f"no {self._kind} at {self._filepath}: run {self._producer} first")
        return self._cls.load(self._filepath)

    def save(self, data) -> None:
        if not isinstance(data, self._cls):
            raise DatasetError(f"expected {self._cls.__name__}, got {type(data).__name__}")
        with staged_file(self._filepath) as staging:
            data.save(staging)

    def _exists(self) -> bool:
        return self._filepath.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class ActivationCacheDataset(_SafetensorsDataset):
    """An ActivationCache as one safetensors file."""

    _kind = "activation cache"
    _cls = ActivationCache
    _producer = "`kedro run --pipeline=probe`"


class AttributionScoresDataset(_SafetensorsDataset):
    """AttributionScores as one safetensors file."""

    _kind = "attribution scores"
    _cls = AttributionScores
    _producer = "`kedro run --pipeline=probe`"
