"""Kedro datasets for the probe pipeline's safetensors files (no pickles).

* :class:`ActivationCacheDataset`: an :class:`~fkr_kedro.analysis.capture.ActivationCache`
  as ONE safetensors file (``ActivationCache.save`` / ``ActivationCache.load``), or, for a
  cache captured in chunks (``probe.capture.chunk_rows``), a directory of shards beside it
  (``activations.safetensors`` -> ``activations/``), read lazily;
* :class:`AttributionScoresDataset`: :class:`~fkr_kedro.analysis.neurons.AttributionScores`
  (``AttributionScores.save`` / ``AttributionScores.load``).

Both write atomically (``modeling.storage.staged_file``: a temporary file beside the target, then a rename), so an
interrupted run never leaves a truncated file that a later run would load, and record a
manifest beside it (sha256 of each file, tensor names, dtypes and shapes), checked before it
is read (:mod:`fkr_kedro.datasets.integrity`): a cache changed after it was written is one
error naming it and the command that rebuilds it (``rebuild``: the arguments of ``kedro run``).
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

from .integrity import (
    adopt_artifact,
    check_artifact,
    rebuild_command,
    remove_artifact_manifest,
    write_artifact_manifest,
)


def safetensors_content(path: Path) -> dict:
    """Tensor names, dtypes and shapes from a safetensors header (a sharded cache: of its
    index file, and the number of its files); no tensor data is read."""
    from safetensors import safe_open

    path = Path(path)
    index = path / "cache.safetensors" if path.is_dir() else path
    with safe_open(str(index), framework="pt") as f:
        tensors = {k: [f.get_slice(k).get_dtype(), list(f.get_slice(k).get_shape())] for k in sorted(f.keys())}
    content = {"tensors": tensors}
    if path.is_dir():
        content["files"] = sum(1 for p in path.rglob("*") if p.is_file())
    return content


class _SafetensorsDataset(AbstractDataset):
    _kind = "file"
    _cls: Any = None

    def __init__(self, filepath: str, rebuild: str = "--pipeline=probe", metadata: dict | None = None):
        self._filepath = Path(filepath)
        self._rebuild = rebuild
        self.metadata = metadata

    def _read(self, path: Path):
        if not path.exists():
            raise DatasetError(f"no {self._kind} at {self._filepath}: run `{rebuild_command(self._rebuild)}` first")
        manifest = check_artifact(path, self._kind, self._rebuild, safetensors_content)
        try:
            data = self._cls.load(path)
        except Exception as error:  # noqa: BLE001 - a file without manifest that does not parse
            raise DatasetError(
                f"{self._kind} {path} cannot be read ({type(error).__name__}: {error}); rebuild it with "
                f"`{rebuild_command(self._rebuild)}`"
            ) from None
        if manifest is None:
            adopt_artifact(path, self._kind, safetensors_content(path))
        return data

    def load(self):
        return self._read(self._filepath)

    def save(self, data) -> None:
        if not isinstance(data, self._cls):
            raise DatasetError(f"expected {self._cls.__name__}, got {type(data).__name__}")
        remove_artifact_manifest(self._filepath)
        with staged_file(self._filepath) as staging:
            data.save(staging)
        write_artifact_manifest(self._filepath, safetensors_content(self._filepath))

    def _exists(self) -> bool:
        return self._filepath.exists()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class ActivationCacheDataset(_SafetensorsDataset):
    """An ActivationCache as one safetensors file, or a sharded one as the directory
    ``filepath`` without its suffix; saving one form removes the other (never both)."""

    _kind = "activation cache"
    _cls = ActivationCache

    @property
    def _directory(self) -> Path:
        return self._filepath.with_suffix("")

    def load(self) -> ActivationCache:
        if self._directory.is_dir() and not self._filepath.exists():
            return self._read(self._directory)
        return super().load()

    def save(self, data) -> None:
        if not isinstance(data, ActivationCache) or not data.is_sharded:
            super().save(data)
            if self._directory.is_dir():
                shutil.rmtree(self._directory)
            remove_artifact_manifest(self._directory)
            return
        remove_artifact_manifest(self._directory)
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
        remove_artifact_manifest(self._filepath)
        write_artifact_manifest(self._directory, safetensors_content(self._directory))

    def _exists(self) -> bool:
        return self._filepath.exists() or self._directory.is_dir()


class AttributionScoresDataset(_SafetensorsDataset):
    """AttributionScores as one safetensors file."""

    _kind = "attribution scores"
    _cls = AttributionScores
