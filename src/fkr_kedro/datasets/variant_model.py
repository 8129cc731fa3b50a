"""Kedro datasets for model directories that later stages load by path.

* :class:`ModelDirectoryDataset` loads the path of an existing model directory (for tools
  such as GPTQModel that read weights from disk themselves);
* :class:`VariantModelDataset` saves a :class:`QuantizationJob` by running it into its
  folder, unless the same job (variant spec, source weights, calibration texts) is already
  there, and loads any variant back as a :class:`~fkr_kedro.modeling.load.CausalLM`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from ..modeling.load import CausalLM
from ..modeling.storage import is_model_directory
from ..quantization.api import load_quantized, quantize, recorded_fingerprint, variant_fingerprint
from ..quantization.variants import VariantSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuantizationJob:
    """A variant to write: the spec, the model it quantizes and its calibration texts."""

    spec: VariantSpec
    source_dir: Path
    calibration_texts: tuple[str, ...]
    overwrite: bool = False


class ModelDirectoryDataset(AbstractDataset[None, Path]):
    """Read-only: the path of a model directory written by another dataset."""

    def __init__(self, path: str, metadata: dict | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> Path:
        if not is_model_directory(self._path):
            raise DatasetError(f"no model directory at {self._path}: run the pipeline that produces it first")
        return self._path

    def save(self, data: None) -> None:
        raise DatasetError(f"{self._path} is read-only here: the model is written through its own dataset")

    def _exists(self) -> bool:
        return is_model_directory(self._path)

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class VariantModelDataset(AbstractDataset[QuantizationJob, CausalLM]):
    def __init__(self, path: str, load_args: dict[str, Any] | None = None, metadata: dict | None = None):
        self._path = Path(path)
        self._load_args = dict(load_args or {})
        self.metadata = metadata

    def load(self) -> CausalLM:
        if not is_model_directory(self._path):
            raise DatasetError(f"variant not found at {self._path}: run `kedro run --pipeline=quantize` first")
        return load_quantized(self._path, **self._load_args)

    def save(self, job: QuantizationJob) -> None:
        texts = list(job.calibration_texts)
        if not job.overwrite and recorded_fingerprint(self._path) == variant_fingerprint(job.source_dir, job.spec, texts):
            log.info(
                "Variant %s is already on disk at %s; kept (set quantize.overwrite: true to redo it)",
                job.spec.name, self._path,
            )
            return
        quantize(job.source_dir, job.spec, texts, self._path)

    def _exists(self) -> bool:
        return is_model_directory(self._path)

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "load_args": self._load_args}
