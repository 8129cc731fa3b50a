"""The full-precision reference: the source weights, re-saved as a standard model directory
(in the source dtype, or in ``spec.dtype``: ``fp_bf16`` is the reference for what bfloat16
alone costs)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..modeling.load import load_causal_lm
from .methods import quantizable_linears
from .variants import VariantSpec


def quantize(source_dir: Path, spec: VariantSpec, calibration_texts: list[str], out_dir: Path) -> dict:
    # Nothing runs here, so stay on the CPU whatever device the variant is evaluated on.
    lm = load_causal_lm(source_dir, device="cpu")
    if spec.dtype is not None:
        lm.model.to(getattr(torch, spec.dtype))
    lm.save(out_dir)
    modules = {name: "full_precision" for name in quantizable_linears(lm.model.config)}
    return {"compute_dtype": str(lm.model.dtype).removeprefix("torch."), "modules": modules}
