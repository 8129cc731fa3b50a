"""Quantization library: variants (typed, validated before any model loads), one backend
module per library (``fp``, ``bnb``, ``gptq`` for GPTQ and AWQ, ``rtn``, ``hqq``, ``torchao``), a registry of
methods, the ``quantize``/``load_quantized`` interface and the storage footprint.
Knows nothing of Kedro."""

from .api import load_quantized, quantize
from .footprint import Footprint, footprint
from .methods import METHODS, Method
from .variants import VariantError, VariantSpec, validate_variants, variant_name

__all__ = [
    "METHODS",
    "Footprint",
    "Method",
    "VariantError",
    "VariantSpec",
    "footprint",
    "load_quantized",
    "quantize",
    "validate_variants",
    "variant_name",
]
