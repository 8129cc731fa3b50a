"""torchao weight-only int8 and int4 through transformers' ``TorchAoConfig``, on CPU as on CUDA.

- ``torchao_int8``: ``Int8WeightOnlyConfig`` (int8 weights, one float32 scale and int8 zero
  point per output row), torchao's standard int8 weight-only format.
- ``torchao_int4``: ``IntxWeightOnlyConfig(weight_dtype=int4,
  granularity=PerGroup(group_size))`` (``PerAxis(0)``, one group per row, for -1),
  symmetric, a float32 scale and an int8 zero point per group. This is the int4 format of torchao 0.18 that both runs on a CPU and can be saved: its
  ``Int4WeightOnlyConfig`` formats need CUDA kernels (plain: mslk; tile_packed_to_4d:
  bfloat16 tinygemm), and its CPU layout (``Int4OpaqueTensor``, prototype) runs but
  transformers' safetensors writer rejects it ("Unsupported tensor type"). The saveable CPU
  format keeps each 4-bit code in its own int8 byte, so the stored format costs 8 bits a
  weight plus scales: effective bits 8 + 40/group_size, not 4; the footprint reports that,
  and the accuracy is that of a 4-bit grid.

The weights are quantized as the model loads and saved by transformers (torchao's tensor
subclasses flattened into safetensors, the config serialized in config.json), so a plain
``from_pretrained`` reloads them. The lm_head stays in full precision.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..modeling.load import load_causal_lm
from .methods import quantizable_linears
from .variants import VariantSpec


def torchao_config(spec: VariantSpec):
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig, PerAxis, PerGroup
    from transformers import TorchAoConfig

    if spec.method == "torchao_int8":
        # set_inductor_config off: it would change torch.compile settings process-wide.
        quant_type = Int8WeightOnlyConfig(set_inductor_config=False)
    else:
        granularity = PerAxis(0) if spec.group_size == -1 else PerGroup(spec.group_size)
        quant_type = IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=granularity)
    return TorchAoConfig(quant_type, modules_to_not_convert=["lm_head"])


def quantize(source_dir: Path, spec: VariantSpec, calibration_texts: list[str], out_dir: Path) -> dict:
    lm = load_causal_lm(source_dir, device=spec.device, quantization_config=torchao_config(spec))
    lm.save(out_dir)
    modules = dict.fromkeys(quantizable_linears(lm.model.config), "torchao")
    return {"compute_dtype": str(lm.model.dtype).removeprefix("torch."), "modules": modules}
