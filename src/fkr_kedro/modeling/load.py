"""Load a causal LM and its tokenizer the way every stage of the study does.

One loader for the embedded model, a local model directory and (later) hub ids and GGUF
files. ``trust_remote_code`` stays off unless the caller turns it on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class CausalLM:
    """A model with its tokenizer: what flows between pipeline stages."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase

    def save(self, path: str | Path) -> None:
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)


def resolve_device(device: str = "auto") -> str:
    """"auto" picks CUDA when present; an explicit "cuda" on a machine without one is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but no CUDA GPU is visible: set device to 'auto' or 'cpu'")
    return device


def load_causal_lm(
    path: str | Path,
    device: str = "auto",
    dtype: str | torch.dtype = "auto",
    trust_remote_code: bool = False,
    **model_kwargs: Any,
) -> CausalLM:
    """Load model and tokenizer from a local Hugging Face model directory."""
    device = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, trust_remote_code=trust_remote_code, device_map=device, **model_kwargs
    )
    model.eval()
    return CausalLM(model=model, tokenizer=tokenizer)
