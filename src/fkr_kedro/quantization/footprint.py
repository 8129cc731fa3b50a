"""What a saved variant costs: bytes on disk and effective bits per quantized weight.

Effective bits are counted from the stored format, not assumed from the nominal bits: for
each linear layer that the methods quantize (every ``nn.Linear`` but the lm_head), the bytes
of every tensor stored under the layer's name except its bias (packed weights, scales,
zero points, ``g_idx``, bitsandbytes' absmax, code book and serialized quant state), read
from the safetensors headers, times 8, over the layer's ``in_features * out_features``.
A full-precision variant reads 32 (or 16) bits.

Besides storage, the footprint carries two facts ``variant.json`` records at quantization
(NaN when a directory has no record): the share of quantizable linears per method they
actually got (``modules.<method>_fraction``, from the quantizer's own log: a GPTQ variant
whose modules partly fell back to RTN shows it here; ``quantized_modules`` is how many
quantizable linears the fractions are of) and the dtype its activations are
computed in (``compute_dtype_bits``: 32, 16; ``compute_dtype_mantissa_bits``: 23 float32,
10 float16, 7 bfloat16).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig

from .api import variant_record
from .methods import quantizable_linears


@dataclass(frozen=True)
class LayerFootprint:
    name: str
    weights: int  # in_features * out_features of the original layer
    bits: int  # bits stored for it


# The methods a module can be recorded with (variant.json ``modules``); anything else a
# quantizer reports (skipped, a non-finite loss, AWQ without a scale on a model without
# grouped-query attention, an unknown log entry) counts as ``other``. ``awq_unscaled_gqa``
# and ``awq_gqa_average`` are AWQ's o_proj under grouped-query attention (quantization/awq_gqa.py):
# the method's own rule and its option, each its own share, not part of ``awq``'s.
MODULE_METHODS = (
    "full_precision", "bnb", "gptq", "awq", "awq_unscaled_gqa", "awq_gqa_average", "rtn", "rtn_fallback", "hqq",
    "torchao", "other",
)
_MANTISSA_BITS = {torch.float32: 23, torch.float16: 10, torch.bfloat16: 7, torch.float64: 52}


@dataclass(frozen=True)
class Footprint:
    storage_bytes: int  # all weight files (*.safetensors) of the directory
    layers: tuple[LayerFootprint, ...]
    modules: tuple[tuple[str, str], ...] = ()  # (linear, method it got), from variant.json
    compute_dtype: str | None = None  # from variant.json

    @property
    def quantized_weights(self) -> int:
        return sum(layer.weights for layer in self.layers)

    @property
    def effective_bits(self) -> float:
        return sum(layer.bits for layer in self.layers) / self.quantized_weights

    def module_fractions(self) -> dict[str, float]:
        """Share of the quantizable linears per method (NaN for all when not recorded)."""
        if not self.modules:
            return dict.fromkeys(MODULE_METHODS, float("nan"))
        methods = [m if m in MODULE_METHODS else "other" for _, m in self.modules]
        return {m: methods.count(m) / len(methods) for m in MODULE_METHODS}

    def as_dict(self) -> dict[str, float]:
        dtype = getattr(torch, self.compute_dtype) if self.compute_dtype else None
        return {
            "storage_bytes": self.storage_bytes,
            "quantized_weights": self.quantized_weights,
            "quantized_modules": len(self.layers),
            "effective_bits": self.effective_bits,
            **{f"modules.{m}_fraction": f for m, f in self.module_fractions().items()},
            "compute_dtype_bits": dtype.itemsize * 8 if dtype else float("nan"),
            "compute_dtype_mantissa_bits": _MANTISSA_BITS.get(dtype, float("nan")) if dtype else float("nan"),
        }


def footprint(model_dir: str | Path, trust_remote_code: bool = False) -> Footprint:
    model_dir = Path(model_dir)
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors weight files in {model_dir}")
    stored: dict[str, int] = {}
    for file in files:
        stored.update(safetensors_tensor_bytes(file))
    layers = []
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    for name, linear in quantizable_linears(config, trust_remote_code).items():
        prefix = f"{name}."
        nbytes = sum(n for key, n in stored.items() if key.startswith(prefix) and key != f"{name}.bias")
        if nbytes == 0:
            raise ValueError(f"{model_dir}: no stored tensors for linear layer {name!r}")
        layers.append(LayerFootprint(name, linear.in_features * linear.out_features, 8 * nbytes))
    record = variant_record(model_dir)
    return Footprint(
        sum(f.stat().st_size for f in files),
        tuple(layers),
        tuple(sorted(record.get("modules", {}).items())),
        record.get("compute_dtype"),
    )


def safetensors_tensor_bytes(path: str | Path) -> dict[str, int]:
    """Bytes of each tensor in a safetensors file, from its header alone."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    return {k: v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__"}
