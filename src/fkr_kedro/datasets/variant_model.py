"""Kedro datasets for model directories that later stages load by path.

* :class:`ModelDirectoryDataset` loads the path of an existing model directory (for tools
  such as GPTQModel that read weights from disk themselves);
* :class:`ModelStoreDataset` loads where a model is stored, for the quantize node's (and the
  scaling sweep's) keep-check (:func:`fkr_kedro.quantization.api.quantize_or_keep`: it quantizes unless the
  stored variant has the same fingerprint and intact files);
* :class:`VariantModelDataset` saves what that node returns (a staging folder, checked, then
  moved into place; or the stored variant, kept) and loads any variant back as a
  :class:`~fkr_kedro.modeling.load.CausalLM`.

The loaders check the directory's files against its weight manifest before handing it on
(:mod:`fkr_kedro.datasets.integrity`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from ..modeling.load import CausalLM
from ..modeling.storage import is_model_directory
from ..quantization.api import (
    VARIANT_FILE, VariantDirectory, expected_fingerprint, load_quantized, recorded_fingerprint, stale_reason,
)
from .integrity import check_model_directory, save_made_model
from ..run_config import kedro_command


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


class ModelStoreDataset(AbstractDataset[None, Path]):
    """Read-only: where a model is stored, whether or not one is there yet, for a node's
    keep-check (it reads the fingerprint there, not the weights): the quantize node's
    (:func:`~fkr_kedro.quantization.api.quantize_or_keep`) and the scaling sweep's
    (:func:`~fkr_kedro.scaling.sweep.train_or_keep`). The model itself is written through its
    own dataset."""

    def __init__(self, path: str, metadata: dict | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> Path:
        return self._path

    def save(self, data: None) -> None:
        raise DatasetError(f"{self._path} is written through the model's own dataset")

    def _exists(self) -> bool:
        return True  # an empty store is a store: the node writes into it

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class VariantModelDataset(AbstractDataset[VariantDirectory, CausalLM]):
    """A quantized variant: saves what the quantize node made (:class:`VariantDirectory`:
    a checked staging folder moved into place, or the stored variant, kept) and loads the
    variant, its files checked against their manifest."""

    def __init__(
        self, path: str, load_args: dict[str, Any] | None = None, source: str | None = None,
        corpus: str | None = None, metadata: dict | None = None,
    ):
        """``source`` (the base model directory) and ``corpus`` (the training corpus file):
        where the inputs of the variant's fingerprint are, so that exists means current."""
        self._path = Path(path)
        self._load_args = dict(load_args or {})
        self._source = Path(source) if source else None
        self._corpus = Path(corpus) if corpus else None
        self.metadata = metadata

    def load(self) -> CausalLM:
        if not is_model_directory(self._path):
            raise DatasetError(f"variant not found at {self._path}: run `{kedro_command('--pipeline=quantize')}` first")
        check_model_directory(self._path)
        return load_quantized(self._path, **self._load_args)

    def save(self, variant: VariantDirectory) -> None:
        if not isinstance(variant, VariantDirectory):
            raise DatasetError(
                f"{self._path}: a variant is saved from what the quantize node returns "
                f"(quantization.api.quantize_or_keep), not from {type(variant).__name__}"
            )
        # Never replace a good variant with a bad one: the new one's files are checked first.
        save_made_model(variant, self._path, VARIANT_FILE, "variant")

    def _exists(self) -> bool:
        """A variant is there and current: the quantize node's rule (``stale_reason`` on the
        fingerprint the configured variant gets), files unhashed (loading checks them), so
        `--only-missing-outputs` rebuilds a changed variant as `kedro run` does."""
        if not is_model_directory(self._path):
            return False
        wanted = self._wanted()
        if wanted is None:  # not configured, or its inputs not there: whatever is stored stands
            recorded = recorded_fingerprint(self._path)
            return recorded is not None and "source_weights_sha256" in recorded
        return stale_reason(self._path, wanted, check_files=False) is None

    def _wanted(self) -> dict | None:
        from ..run_config import active_variants, study_parameters

        if self._source is None or self._corpus is None or not (self._source.is_dir() and self._corpus.is_file()):
            return None
        params = study_parameters()
        spec = next((s for s in active_variants(params) if s.name == self._path.name), None)
        if spec is None:
            return None
        corpus = self._corpus.read_text().splitlines()
        return expected_fingerprint(self._source, spec, corpus, self._path)

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "load_args": self._load_args}
