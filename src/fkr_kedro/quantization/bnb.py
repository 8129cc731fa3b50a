"""bitsandbytes LLM.int8, NF4 and FP4 through transformers' ``BitsAndBytesConfig``.

The weights are quantized as the model loads and saved in bitsandbytes' serialized form
(int8 weight + per-row ``SCB`` scales; packed 4-bit weight + per-block-of-64 ``absmax`` +
code book), with the quantization config in config.json, so a plain
``from_pretrained`` reloads them, on CPU as on CUDA. Non-linear weights and the lm_head
stay in the source dtype.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BitsAndBytesConfig

from ..modeling.load import load_causal_lm
from .common import source_dtype
from .methods import quantizable_linears
from .variants import VariantSpec


def bnb_config(method: str, compute_dtype: torch.dtype) -> BitsAndBytesConfig:
    if method == "bnb_int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=method.removeprefix("bnb_"),
        bnb_4bit_compute_dtype=compute_dtype,
    )


def quantize(source_dir: Path, spec: VariantSpec, calibration_texts: list[str], out_dir: Path) -> dict:
    dtype = source_dtype(source_dir)
    config = bnb_config(spec.method, dtype)
    # Saved before any forward pass on purpose: on CPUs with AVX512-BF16, bitsandbytes 0.50.2
    # repacks 4-bit weights into a CPU layout on the first forward, and a model saved after
    # that (transformers 5.23) reloads with different logits.
    lm = load_causal_lm(source_dir, device=spec.device, quantization_config=config)
    lm.save(out_dir)
    # bitsandbytes replaces every linear but the lm_head (the footprint checks the stored format).
    modules = {name: "bnb" for name in quantizable_linears(lm.model.config)}
    return {"compute_dtype": str(lm.model.dtype).removeprefix("torch."), "modules": modules}
