"""Kedro datasets for the probe pipeline's safetensors files (no pickles).

* :class:`ActivationCacheDataset`: an :class:`~fkr_kedro.analysis.capture.ActivationCache`
  as ONE safetensors file (``ActivationCache.save`` / ``ActivationCache.load``);
* :class:`AttributionScoresDataset`: :class:`~fkr_kedro.analysis.neurons.AttributionScores`
  (``AttributionScores.save`` / ``AttributionScores.load``).

Both write atomically: to a temporary file beside the target, then ``os.replace``, so an
interrupted run never leaves a truncated file that a later run would load.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from fkr_kedro.analysis.capture import ActivationCache
from fkr_kedro.analysis.neurons import AttributionScores


def _atomic_save(obj: Any, path: Path) -> None:
    """``obj.save(tmp)`` next to ``path``, then rename onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        obj.save(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask is process-wide, not thread-safe


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
        _atomic_save(data, self._filepath)

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
