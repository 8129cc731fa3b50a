"""The registry of quantization methods: what each accepts and which backend module runs it.

Every backend module (``fp``, ``bnb``, ``gptq``, ``rtn``, ``hqq``, ``torchao``) exposes
``quantize(source_dir, spec, calibration_texts, out_dir)``. The rules here are what
:func:`~fkr_kedro.quantization.variants.validate_variants` checks before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PretrainedConfig

# Group sizes GPTQModel 7.0.0's portable torch kernels pack and run (TorchLinear for the
# GPTQ format, TorchAwqLinear for AWQ's GEMM format); -1 is one group spanning each row.
GPTQ_GROUP_SIZES = (-1, 16, 32, 64, 128, 256, 512, 1024)
AWQ_GROUP_SIZES = (-1, 16, 32, 64, 128)
# HQQ groups consecutive input columns (axis 1); hqq 0.2.8's 3-bit packing and dequantization
# need a group size (no per-row -1).
HQQ_GROUP_SIZES = (16, 32, 64, 128, 256)
TORCHAO_GROUP_SIZES = (-1, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class Method:
    name: str
    backend: str  # module of this package that runs it
    bits: tuple[int, ...]  # nominal bit widths accepted; the first is the default
    group_sizes: tuple[int, ...] = ()  # accepted group sizes; () when the method has no groups
    default_group_size: int | None = None
    options: frozenset[str] = frozenset()  # VariantSpec fields the method reads besides bits/group_size
    description: str = ""
    color: str = "gray"  # its colour and marker in every figure (fkr_kedro.reporting.figures)
    marker: str = "o"

    @property
    def calibrated(self) -> bool:
        """Quantizes from calibration texts: its variants get one copy per calibration draw."""
        return "calibration_size" in self.options

    @property
    def full_precision(self) -> bool:
        """Weights as trained: no bit widths to choose."""
        return not self.bits


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(
            "fp", "fp", (), options=frozenset({"dtype"}),
            description="full precision reference, weights as trained (in the source dtype, or `dtype`)",
            color="black", marker="o",
        ),
        Method(
            "bnb_int8", "bnb", (8,),
            description="bitsandbytes LLM.int8: int8 weights with a scale per row, outlier activations in fp16",
            color="tab:purple", marker="^",
        ),
        Method("bnb_nf4", "bnb", (4,), description="bitsandbytes 4-bit NormalFloat, absmax per block of 64",
               color="tab:orange", marker="P"),
        Method("bnb_fp4", "bnb", (4,), description="bitsandbytes 4-bit float, absmax per block of 64",
               color="tab:brown", marker="X"),
        Method(
            "gptq", "gptq", (4, 8, 3, 2), GPTQ_GROUP_SIZES, 128,
            frozenset({"calibration_size", "calibration_seed", "sym", "desc_act", "max_fallback_fraction"}),
            "GPTQ (second-order error compensation) through GPTQModel",
            color="tab:blue", marker="s",
        ),
        Method(
            "awq", "gptq", (4,), AWQ_GROUP_SIZES, 128,
            frozenset({"calibration_size", "calibration_seed", "sym", "max_fallback_fraction", "awq_gqa"}),
            "AWQ (activation-aware scaling) through GPTQModel, GEMM format",
            color="tab:green", marker="D",
        ),
        Method(
            "rtn", "rtn", (4, 8, 3, 2), GPTQ_GROUP_SIZES, 128,
            frozenset({"sym"}),
            "round-to-nearest per group, no calibration (GPTQModel's weight-only RTN), GPTQ format",
            color="tab:red", marker="v",
        ),
        Method(
            "hqq", "hqq", (4, 8, 3, 2, 1), HQQ_GROUP_SIZES, 64,
            description="HQQ (half-quadratic solver for scale and zero per group, no calibration) through hqq",
            color="tab:cyan", marker="h",
        ),
        Method(
            "torchao_int8", "torchao", (8,),
            description="torchao weight-only int8, a scale per row (Int8WeightOnlyConfig via TorchAoConfig)",
            color="tab:olive", marker="*",
        ),
        Method(
            "torchao_int4", "torchao", (4,), TORCHAO_GROUP_SIZES, 128,
            description="torchao weight-only int4 per group (IntxWeightOnlyConfig via TorchAoConfig; one code per byte)",
            color="gold", marker="p",
        ),
    )
}


def quantizable_linears(
    config: PretrainedConfig, trust_remote_code: bool = False
) -> dict[str, torch.nn.Linear]:
    """The linear layers every method quantizes: each ``nn.Linear`` of the architecture but
    the output embedding (lm_head), which all of them leave in full precision. Built on the
    meta device, so no weights are read or allocated."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    head = model.get_output_embeddings()
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not head}
