"""Round-to-nearest: the calibration-free baseline that shows what GPTQ and AWQ add.

GPTQModel's weight-only RTN: per group of ``group_size`` input columns, a min-max grid of
``2**bits`` levels (asymmetric unless ``sym``), each weight rounded to its nearest level.
Stored in the GPTQ format, so it reloads, runs and is measured exactly like a GPTQ variant.
"""

from __future__ import annotations

from pathlib import Path

from .gptq import gptqmodel, run_gptqmodel
from .variants import VariantSpec


def quantize(source_dir: Path, spec: VariantSpec, calibration_texts: list[str], out_dir: Path) -> dict:
    config = gptqmodel().RTNConfig(
        bits=spec.bits, group_size=spec.group_size, sym=spec.sym, offload_to_disk=False
    )
    return run_gptqmodel(source_dir, config, None, out_dir, spec)
