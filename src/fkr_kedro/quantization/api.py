"""The one interface over all methods: quantize a model directory into a variant
directory, and load any variant back."""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import time
from pathlib import Path

from transformers import AutoConfig

from ..modeling.load import CausalLM, load_causal_lm
from ..modeling.storage import staged_directory
from .methods import METHODS
from .variants import VariantSpec, validate_variants

log = logging.getLogger(__name__)

VARIANT_FILE = "variant.json"
# What variant.json records about the result rather than the inputs: not part of the fingerprint.
RESULT_KEYS = ("seconds", "compute_dtype", "calibration_dtype", "modules")


def quantize(source_dir: Path, spec: VariantSpec, calibration_texts: list[str], out_dir: Path) -> None:
    """Write variant ``spec`` of the model in ``source_dir`` to ``out_dir``: a standard
    model directory (safetensors weights, config.json with its quantization_config,
    tokenizer) plus ``variant.json``: the spec, calibration count and seconds taken, the
    dtype its activations are computed in when loaded (``compute_dtype``) and the method
    each quantizable linear actually got (``modules``, from the quantizer's own log).
    Calibrated methods use the first ``spec.calibration_size`` texts. The directory is
    built beside ``out_dir`` and moved into place, so a failed run leaves no half variant."""
    source_dir, out_dir = Path(source_dir).resolve(), Path(out_dir).resolve()
    validate_variants([spec], AutoConfig.from_pretrained(source_dir))
    method = METHODS[spec.method]
    calibration = _calibration(spec, calibration_texts)
    if method.calibrated and len(calibration) < spec.calibration_size:
        raise ValueError(
            f"variant {spec.name!r} asks for {spec.calibration_size} calibration texts but only "
            f"{len(calibration)} were given: lower calibration_size or pass more texts"
        )
    backend = importlib.import_module(f".{method.backend}", __package__)
    with staged_directory(out_dir) as staging:
        start = time.perf_counter()
        facts = backend.quantize(source_dir, spec, calibration, staging)
        seconds = time.perf_counter() - start
        record = {
            **variant_fingerprint(source_dir, spec, calibration_texts),
            "seconds": round(seconds, 3),
            **{key: facts[key] for key in RESULT_KEYS if key in facts},
        }
        (staging / VARIANT_FILE).write_text(json.dumps(record, indent=2) + "\n")
    log.info("variant %s: %s in %.1f s -> %s", spec.name, method.description, seconds, out_dir)


def variant_fingerprint(source_dir: Path, spec: VariantSpec, calibration_texts: list[str]) -> dict:
    """Everything that determines a variant's weights: the spec, the source weights (name,
    size, modification time: a retrained model invalidates its variants) and the calibration
    texts used. :func:`quantize` records it in ``variant.json``."""
    calibration = _calibration(spec, calibration_texts)
    weights = sorted(Path(source_dir).resolve().glob("*.safetensors"))
    return {
        **spec.model_dump(),
        "source_dir": str(Path(source_dir).resolve()),
        "source_weights": [[w.name, w.stat().st_size, w.stat().st_mtime_ns] for w in weights],
        "calibration_texts": len(calibration),
        "calibration_sha256": hashlib.sha256("\n".join(calibration).encode()).hexdigest(),
    }


def recorded_fingerprint(model_dir: Path) -> dict | None:
    """The fingerprint a variant directory was written with, or None when there is none."""
    path = Path(model_dir) / VARIANT_FILE
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    for key in RESULT_KEYS:
        record.pop(key, None)
    return record


def variant_record(model_dir: Path) -> dict:
    """Everything ``variant.json`` records (empty when the directory has none)."""
    path = Path(model_dir) / VARIANT_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _calibration(spec: VariantSpec, texts: list[str]) -> list[str]:
    return list(texts[: spec.calibration_size]) if METHODS[spec.method].calibrated else []


def load_quantized(model_dir: Path, device: str = "auto") -> CausalLM:
    """Load any variant directory on ``device`` ('auto' picks CUDA when present): GPTQ,
    AWQ and RTN dequantized into the variant's compute dtype (``variant.json``; the dtype
    it was quantized in for older directories), bitsandbytes and full precision through
    transformers in their stored dtype."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    if config.get("quantization_config", {}).get("quant_method") in ("gptq", "awq"):
        import torch

        from . import gptq

        dtype = variant_record(model_dir).get("compute_dtype")
        return gptq.load(Path(model_dir), device, getattr(torch, dtype) if dtype else None)
    return load_causal_lm(model_dir, device=device)
