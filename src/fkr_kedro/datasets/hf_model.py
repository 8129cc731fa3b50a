"""Kedro datasets for the base model directory (safetensors, config, tokenizer).

* :class:`HFModelDataset` saves a :class:`CausalLM` (the model trained from scratch) and
  loads it back;
* :class:`ModelSourceDataset` makes its path the base model directory of a
  :class:`~fkr_kedro.modeling.load.ModelSource`: a GGUF file is dequantized once and saved
  as a standard directory (quantizers read safetensors); a local directory or a hub model
  is linked (a symbolic link to the directory, or to the snapshot in the Hugging Face cache),
  so a 7-14B model's weights are never copied. Loads as a :class:`CausalLM`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from ..modeling.load import CausalLM, ModelSource, as_source, load_causal_lm, load_model, model_directory
from ..modeling.storage import is_model_directory, staged_directory
from .integrity import SOURCE_FILE, check_model_directory, weights_problem
from ..run_config import kedro_command

log = logging.getLogger(__name__)


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
        check_model_directory(self._path)
        return load_causal_lm(self._path, **self._load_args)

    def save(self, data: CausalLM) -> None:
        _unlink_if_link(self._path)
        with staged_directory(self._path) as staging:
            data.save(staging)

    def _exists(self) -> bool:
        return is_model_directory(self._path)

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "load_args": self._load_args}


class ModelSourceDataset(AbstractDataset[ModelSource, CausalLM]):
    """Saving a :class:`ModelSource` makes ``path`` its model directory (see the module
    docstring); a dequantized GGUF already there from the same source is kept.
    Loading gives the model on the source's device and dtype."""

    def __init__(self, path: str, metadata: dict | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def save(self, source: ModelSource | dict) -> None:
        source = as_source(source)
        record = {**source.model_dump(), "source": source.label()}
        if source.kind in ("gguf", "config"):  # dequantized / built once, saved as a directory
            made = "dequantized" if source.kind == "gguf" else "built from config"
            if not self._path.is_symlink() and _recorded(self._path) == record:
                problem = weights_problem(self._path)
                if problem is None:
                    log.info("Base model %s already %s at %s; kept", source.label(), made, self._path)
                    return
                log.warning("Base model at %s: %s; making %s again", self._path, problem, source.label())
            # A split GGUF is joined beside the base model, in this study's folder.
            lm = load_model(source.model_copy(update={"device": "cpu"}), gguf_join_dir=self._path.parent / "base_gguf")
            _unlink_if_link(self._path)
            with staged_directory(self._path) as staging:
                lm.save(staging)
                (staging / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
            log.info("Base model %s %s and saved to %s", source.label(), made, self._path)
            return
        if source.kind in ("dir", "hub"):
            target = model_directory(source).resolve()
            if self._path.resolve() == target:
                return
            if self._path.exists() and not self._path.is_symlink():
                raise DatasetError(
                    f"{self._path} is a model directory of its own (e.g. a model trained from scratch); "
                    f"move or delete it to link {source.label()} there instead"
                )
            self._path.parent.mkdir(parents=True, exist_ok=True)
            _unlink_if_link(self._path)
            os.symlink(target, self._path, target_is_directory=True)
            log.info("Base model %s: %s links to %s (weights not copied)", source.label(), self._path, target)
            return
        raise DatasetError(f"base_model kind {source.kind!r} is trained by the train pipeline, not loaded")

    def load(self) -> CausalLM:
        if not is_model_directory(self._path):
            raise DatasetError(f"no base model at {self._path}: run `{kedro_command('--pipeline=train')}` first")
        check_model_directory(self._path)
        source = _recorded(self._path)
        device = source.get("device", "auto") if source else "auto"
        return load_causal_lm(self._path, device=device, dtype=source.get("dtype", "auto") if source else "auto")

    def _exists(self) -> bool:
        return is_model_directory(self._path)

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


def _recorded(path: Path) -> dict | None:
    file = path / SOURCE_FILE
    return json.loads(file.read_text()) if file.is_file() else None


def _unlink_if_link(path: Path) -> None:
    """Drop a link left by a linked base model (never the directory it points to)."""
    if path.is_symlink():
        path.unlink()
