"""A Kedro dataset for a Hugging Face model directory (safetensors, config, tokenizer)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from ..modeling.load import CausalLM, load_causal_lm


class HFModelDataset(AbstractDataset[CausalLM, CausalLM]):
    """Saves a :class:`CausalLM` with ``save_pretrained`` and loads it with
    :func:`load_causal_lm`. Saving writes to a temporary folder beside the target and
    renames it into place, so an interrupted save never leaves a half-written model."""

    def __init__(self, path: str, load_args: dict[str, Any] | None = None, metadata: dict | None = None):
        self._path = Path(path)
        self._load_args = dict(load_args or {})
        self.metadata = metadata

    def load(self) -> CausalLM:
        if not (self._path / "config.json").exists():
            raise DatasetError(f"no model directory at {self._path}: run the pipeline that produces it first")
        return load_causal_lm(self._path, **self._load_args)

    def save(self, data: CausalLM) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{self._path.name}.", dir=self._path.parent))
        try:
            data.save(staging)
            if self._path.exists():
                shutil.rmtree(self._path)
            staging.rename(self._path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _exists(self) -> bool:
        return (self._path / "config.json").exists()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "load_args": self._load_args}
