"""A Kedro dataset for a Hugging Face model directory (safetensors, config, tokenizer)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from ..modeling.load import CausalLM, load_causal_lm
from ..modeling.storage import is_model_directory, staged_directory


class HFModelDataset(AbstractDataset[CausalLM, CausalLM]):
    """Saves a :class:`CausalLM` with ``save_pretrained`` and loads it with
    :func:`load_causal_lm`. Saving writes to a temporary folder beside the target and
    renames it into place, so an interrupted save never leaves a half-written model."""

    def __init__(self, path: str, load_args: dict[str, Any] | None = None, metadata: dict | None = None):
        self._path = Path(path)
        self._load_args = dict(load_args or {})
        self.metadata = metadata

    def load(self) -> CausalLM:
        if not is_model_directory(self._path):
            raise DatasetError(f"no model directory at {self._path}: run the pipeline that produces it first")
        return load_causal_lm(self._path, **self._load_args)

    def save(self, data: CausalLM) -> None:
        with staged_directory(self._path) as staging:
            data.save(staging)

    def _exists(self) -> bool:
        return is_model_directory(self._path)

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "load_args": self._load_args}
