"""The full-precision reference: the source weights, re-saved as a standard model directory."""

from __future__ import annotations

from pathlib import Path

from ..modeling.load import load_causal_lm
from .variants import VariantSpec


def quantize(source_dir: Path, spec: VariantSpec, calibration_texts: list[str], out_dir: Path) -> None:
    # Nothing runs here, so stay on the CPU whatever device the variant is evaluated on.
    load_causal_lm(source_dir, device="cpu").save(out_dir)
