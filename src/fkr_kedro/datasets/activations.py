"""Kedro datasets for the probe pipeline's safetensors files (no pickles).

* :class:`ActivationCacheDataset`: an :class:`~fkr_kedro.analysis.capture.ActivationCache`
  as ONE safetensors file (``ActivationCache.save`` / ``ActivationCache.load``), or, for a
  cache captured in chunks (``probe.capture.chunk_rows``), a directory of shards beside it
  (``activations.safetensors`` -> ``activations/``), read lazily;
* :class:`AttributionScoresDataset`: :class:`~fkr_kedro.analysis.neurons.AttributionScores`
  (``AttributionScores.save`` / ``AttributionScores.load``).

Both write atomically (``modeling.storage.staged_file``: a temporary file beside the target, then a rename), so an
interrupted run never leaves a truncated file that a later run would load.
"""

from __future__ import annotations

import shutil
import tempfile
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
    """An ActivationCache as one safetensors file, or a sharded one as the directory
    ``filepath`` without its suffix; saving one form removes the other (never both)."""

    _kind = "activation cache"
    _cls = ActivationCache
    _producer = "`kedro run --pipeline=probe`"

    @property
    def _directory(self) -> Path:
        return self._filepath.with_suffix("")

    def load(self) -> ActivationCache:
        if self._directory.is_dir() and not self._filepath.exists():
            return ActivationCache.load(self._directory)
        return super().load()

    def save(self, data) -> None:
        if not isinstance(data, ActivationCache) or not data.is_sharded:
            super().save(data)
            if self._directory.is_dir():
                shutil.rmtree(self._directory)
            return
        # A staging folder beside the target, renamed into place when complete.
        self._directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{self._directory.name}.", dir=self._directory.parent))
        try:
            data.save(staging / "cache")
            if self._directory.exists():
                shutil.rmtree(self._directory)
            (staging / "cache").rename(self._directory)
            data.directory = self._directory
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if self._filepath.exists():
            self._filepath.unlink()

    def _exists(self) -> bool:
        return self._filepath.exists() or self._directory.is_dir()


class AttributionScoresDataset(_SafetensorsDataset):
    """AttributionScores as one safetensors file."""

    _kind = "attribution scores"
    _cls = AttributionScores
    _producer = "`kedro run --pipeline=probe`"
