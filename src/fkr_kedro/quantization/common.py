"""Small helpers the backends share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase


def source_dtype(model_dir: str | Path) -> torch.dtype:
    """The dtype the model directory was saved in (float32 when the config does not say)."""
    dtype = getattr(AutoConfig.from_pretrained(model_dir), "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    return dtype or torch.float32


def load_tokenizer(model_dir: str | Path) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@contextmanager
def quiet_load_report() -> Iterator[None]:
    """Silence transformers' load report while a quantized directory is read as a dense
    model: it lists the quantized linears' ``weight`` as missing (and their stored tensors
    as unexpected), which the caller fills in right after from the stored format."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)
