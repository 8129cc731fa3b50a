"""Kedro datasets for model directories that later stages load by path.

* :class:`ModelDirectoryDataset` loads the path of an existing model directory (for tools
  such as GPTQModel that read weights from disk themselves);
* :class:`VariantModelDataset` saves a :class:`QuantizationJob` by running it into its
  folder, unless the same job (variant spec, content of the source weights, calibration
  texts, library versions and, where it matters, thread count) is already there with its
  files intact, and loads any variant back as a :class:`~fkr_kedro.modeling.load.CausalLM`.

Both check the directory's files against its weight manifest before handing it on
(:mod:`fkr_kedro.datasets.integrity`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from ..modeling.load import CausalLM
from ..modeling.storage import is_model_directory, remove_dead_staging
from ..quantization.api import load_quantized, quantize, recorded_fingerprint, variant_fingerprint
from ..quantization.variants import VariantSpec
from .integrity import check_model_directory, weights_problem

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
        check_model_directory(self._path)
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
        check_model_directory(self._path)
        return load_quantized(self._path, **self._load_args)

    def save(self, job: QuantizationJob) -> None:
        """Quantize unless the same variant is on disk, intact; a variant whose files fail
        their check (corrupted, truncated, no manifest) is quantized again with a warning."""
        remove_dead_staging(self._path.parent)
        texts = list(job.calibration_texts)
        recorded = None if job.overwrite else recorded_fingerprint(self._path)
        if recorded is not None:
            wanted = variant_fingerprint(job.source_dir, job.spec, texts)
            problem = weights_problem(self._path) if recorded == wanted else None
            if recorded == wanted and problem is None:
                log.info(
                    "Variant %s is already on disk at %s; kept (set quantize.overwrite: true to redo it)",
                    job.spec.name, self._path,
                )
                return
            if problem is not None:
                log.warning("Variant %s at %s: %s; quantizing it again", job.spec.name, self._path, problem)
            elif "source_weights_sha256" not in recorded:
                log.info(
                    "Variant %s at %s was written before fingerprints held content hashes and the "
                    "environment; quantizing it again", job.spec.name, self._path,
                )
            else:
                log.info(
                    "Variant %s at %s was written with other settings (%s); quantizing it again",
                    job.spec.name, self._path, "; ".join(fingerprint_changes(recorded, wanted)),
                )
        quantize(job.source_dir, job.spec, texts, self._path)

    def _exists(self) -> bool:
        return is_model_directory(self._path)

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "load_args": self._load_args}


def fingerprint_changes(recorded: dict, wanted: dict, prefix: str = "") -> list[str]:
    """What differs between two fingerprints, as ``key: old -> new`` (nested keys dotted)."""
    changes = []
    for key in sorted(set(recorded) | set(wanted), key=str):
        old, new = recorded.get(key), wanted.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += fingerprint_changes(old, new, f"{prefix}{key}.")
        elif old != new:
            changes.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return changes
