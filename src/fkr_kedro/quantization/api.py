"""The one interface over all methods: quantize a model directory into a variant
directory, and load any variant back."""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig

from ..modeling.load import CausalLM, load_causal_lm, resolve_device
from ..modeling.storage import (
    WeightsError, new_staging_directory, staged_directory, verify_weights, weights_digest, write_manifest,
)
from .methods import METHODS
from .variants import VariantSpec, validate_variants

log = logging.getLogger(__name__)

VARIANT_FILE = "variant.json"
# What variant.json records about the result rather than the inputs: not part of the fingerprint.
RESULT_KEYS = ("seconds", "compute_dtype", "calibration_dtype", "modules", "notes", "awq_gqa_search")


def quantize(source_dir: Path, spec: VariantSpec, calibration_texts: list[str], out_dir: Path) -> None:
    """Write variant ``spec`` of the model in ``source_dir`` to ``out_dir``: a standard
    model directory (safetensors weights, config.json with its quantization_config,
    tokenizer) plus the weight manifest and ``variant.json``: its fingerprint, the seconds
    taken, the dtype its activations are computed in when loaded (``compute_dtype``) and the
    method each quantizable linear actually got (``modules``, from the quantizer's own log),
    and where a rule of the method applied, ``notes`` (AWQ's o_proj under grouped-query
    attention) and, for ``awq_gqa: average``, the scale search per attention block
    (``awq_gqa_search``: the grid ratio chosen, o_proj's output error with and without it).
    Calibrated methods use the first ``spec.calibration_size`` texts. The directory is
    built beside ``out_dir`` and moved into place, so a failed run leaves no half variant."""
    source_dir, out_dir = Path(source_dir).resolve(), Path(out_dir).resolve()
    calibration = _checked_calibration(source_dir, spec, calibration_texts)
    # Taken before the backend runs, in the state a later keep-check compares it in.
    fingerprint = variant_fingerprint(source_dir, spec, calibration_texts)
    with staged_directory(out_dir) as staging:
        _write_variant(source_dir, spec, calibration, staging, fingerprint)
    log.info("variant %s -> %s", spec.name, out_dir)


def _write_variant(
    source_dir: Path, spec: VariantSpec, calibration: list[str], directory: Path, fingerprint: dict
) -> None:
    """Run the method's backend into the empty ``directory`` and record ``variant.json``."""
    method = METHODS[spec.method]
    backend = importlib.import_module(f".{method.backend}", __package__)
    start = time.perf_counter()
    facts = backend.quantize(source_dir, spec, calibration, directory)
    seconds = time.perf_counter() - start
    record = {**fingerprint, "seconds": round(seconds, 3), **{key: facts[key] for key in RESULT_KEYS if key in facts}}
    (directory / VARIANT_FILE).write_text(json.dumps(record, indent=2) + "\n")
    log.info("variant %s: %s in %.1f s", spec.name, method.description, seconds)


@dataclass(frozen=True)
class VariantDirectory:
    """What :func:`quantize_or_keep` hands its saver: the stored variant, kept (``kept``), or
    a staging folder beside it holding the new variant with its manifest, to move into place."""

    path: Path
    kept: bool


def quantize_or_keep(
    source_dir: Path, spec: VariantSpec, calibration_texts: list[str], stored_dir: Path, overwrite: bool = False
) -> VariantDirectory:
    """Keep the variant in ``stored_dir`` when it is current (:func:`stale_reason`: same
    fingerprint, files intact) without loading its weights; else quantize into a new staging
    folder beside ``stored_dir`` (``overwrite``: always). The caller replaces ``stored_dir``
    with the staging folder (:func:`~fkr_kedro.modeling.storage.replace_with_staging`);
    staging left by a process that died is removed by the next write beside it."""
    source_dir, stored_dir = Path(source_dir).resolve(), Path(stored_dir)
    wanted = variant_fingerprint(source_dir, spec, calibration_texts)
    why = None if overwrite else stale_reason(stored_dir, wanted)
    if not overwrite and why is None:
        log.info(
            "Variant %s is already on disk at %s; kept (set quantize.overwrite: true to redo it)", spec.name, stored_dir
        )
        return VariantDirectory(stored_dir, kept=True)
    if why is not None and (stored_dir / VARIANT_FILE).exists():
        damaged = recorded_fingerprint(stored_dir) == wanted  # the right variant, its files not
        log.log(logging.WARNING if damaged else logging.INFO, "Variant %s at %s: %s; quantizing it again",
                spec.name, stored_dir, why)
    calibration = _checked_calibration(source_dir, spec, calibration_texts)  # checked only when quantizing
    staging = new_staging_directory(stored_dir)
    try:
        _write_variant(source_dir, spec, calibration, staging, wanted)
        write_manifest(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return VariantDirectory(staging, kept=False)


def stale_reason(model_dir: Path, wanted: dict, check_files: bool = True) -> str | None:
    """Why the variant in ``model_dir`` is not the one the fingerprint ``wanted``
    (:func:`variant_fingerprint`) describes, or None when it is current: the one rule that
    `kedro run`'s keep-check, the variant dataset and `kedro submit` apply.
    ``check_files``: also check its files against their manifest (hashes every file)."""
    recorded = recorded_fingerprint(model_dir)
    if recorded is None:
        return "no variant there" if not Path(model_dir).exists() else f"no readable {VARIANT_FILE}"
    if "source_weights_sha256" not in recorded:
        return "written before fingerprints held content hashes and the environment"
    if recorded != wanted:
        return f"written with other settings ({'; '.join(fingerprint_changes(recorded, wanted))})"
    if check_files:
        try:
            verify_weights(model_dir)
        except WeightsError as error:
            return str(error)
    return None


# What the environment records about the machine a variant is quantized on. A check made
# elsewhere (`kedro submit` on a login node, a dataset's exists before any node set its thread
# count) cannot know it: it takes the recorded values, and the node's own check decides them.
MACHINE_KEYS = ("device", "torch_threads")


def expected_fingerprint(source_dir: Path, spec: VariantSpec, corpus: list[str], stored_dir: Path | None = None) -> dict:
    """The fingerprint variant ``spec`` of the model in ``source_dir`` gets in a study whose
    calibration texts are drawn from ``corpus`` (:func:`spec_calibration_texts`: with the
    spec's own ``calibration_seed``, its draw's). With ``stored_dir``: the machine part of
    its environment (:data:`MACHINE_KEYS`) as recorded there."""
    wanted = variant_fingerprint(source_dir, spec, spec_calibration_texts(spec, corpus))
    if stored_dir is not None:
        recorded = (recorded_fingerprint(stored_dir) or {}).get("environment", {})
        for key in MACHINE_KEYS:
            if key in recorded:
                wanted["environment"][key] = recorded[key]
            else:
                wanted["environment"].pop(key, None)
    return wanted


def spec_calibration_texts(spec: VariantSpec, corpus: list[str]) -> list[str]:
    """The calibration texts of ``spec``: ``corpus`` shuffled with its draw's
    ``calibration_seed``, cut to its ``calibration_size``; none for a method that does not
    calibrate (:func:`~fkr_kedro.quantization.calibration.calibration_texts`)."""
    from .calibration import calibration_texts

    if not METHODS[spec.method].calibrated:
        return []
    return calibration_texts(corpus, spec.calibration_seed or 0, spec.calibration_size)


def fingerprint_changes(recorded: dict, wanted: dict, prefix: str = "") -> list[str]:
    """What differs between two fingerprints, as ``key: old -> new`` (nested keys dotted)."""
    changes = []
    for key in sorted(set(recorded) | set(wanted), key=str):
        old, new = recorded.get(key), wanted.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += fingerprint_changes(old, new, f"{prefix}{key}.")
        elif old != new:
            changes.append(f"{prefix}{key}: {old!r} -> {new!r}")
    return changes


# Libraries whose version can change the bytes a backend writes.
_LIBRARIES = {
    "fp": (), "bnb": ("bitsandbytes",), "gptq": ("gptqmodel",), "rtn": ("gptqmodel",), "hqq": ("hqq",),
    "torchao": ("torchao",),
}  # fmt: skip


def variant_fingerprint(source_dir: Path, spec: VariantSpec, calibration_texts: list[str]) -> dict:
    """Everything that determines a variant's weights: the spec, the content of the source
    weights (:func:`~fkr_kedro.modeling.storage.weights_digest`: a retrained model
    invalidates its variants; a copied or moved project keeps them), the calibration texts
    used and the environment (:func:`quantization_environment`). :func:`quantize` records
    it in ``variant.json``. No path enters it."""
    calibration = _calibration(spec, calibration_texts)
    return {
        **spec.model_dump(),
        "source_weights_sha256": weights_digest(source_dir),
        "calibration_texts": len(calibration),
        "calibration_sha256": hashlib.sha256("\n".join(calibration).encode()).hexdigest(),
        "environment": quantization_environment(spec),
    }


def quantization_environment(spec: VariantSpec) -> dict:
    """The settings outside the spec that change the bytes of ``spec``'s variant: the
    versions of torch, transformers and the method's library, the device it runs on, and
    for calibrated methods (GPTQ, AWQ) on CPU torch's thread count: their Hessians and
    activation statistics are sums whose rounding depends on how the threads split them
    (GPTQ at 2 bits gave 25.5% one-hop recall with 2 threads, 24.0% with 1)."""
    method = METHODS[spec.method]
    libraries = ("torch", "transformers", *_LIBRARIES[method.backend])
    environment: dict = {name: _version(name) for name in libraries}
    device = resolve_device(spec.device)
    environment["device"] = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    if method.calibrated and device == "cpu":
        environment["torch_threads"] = torch.get_num_threads()
    return environment


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def recorded_fingerprint(model_dir: Path) -> dict | None:
    """The fingerprint a variant directory was written with, or None when there is none."""
    path = Path(model_dir) / VARIANT_FILE
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    for key in RESULT_KEYS:
        record.pop(key, None)
    return record


def variant_record(model_dir: Path) -> dict:
    """Everything ``variant.json`` records (empty when the directory has none)."""
    path = Path(model_dir) / VARIANT_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _checked_calibration(source_dir: Path, spec: VariantSpec, texts: list[str]) -> list[str]:
    """The texts ``spec`` calibrates on, after checking it fits the model in ``source_dir``."""
    validate_variants([spec], AutoConfig.from_pretrained(source_dir))
    calibration = _calibration(spec, texts)
    if METHODS[spec.method].calibrated and len(calibration) < spec.calibration_size:
        raise ValueError(
            f"variant {spec.name!r} asks for {spec.calibration_size} calibration texts but only "
            f"{len(calibration)} were given: lower calibration_size or pass more texts"
        )
    return calibration


def _calibration(spec: VariantSpec, texts: list[str]) -> list[str]:
    return list(texts[: spec.calibration_size]) if METHODS[spec.method].calibrated else []


def load_quantized(model_dir: Path, device: str = "auto") -> CausalLM:
    """Load any variant directory on ``device`` ('auto' picks CUDA when present): GPTQ,
    AWQ and RTN dequantized into the variant's compute dtype (``variant.json``; the dtype
    it was quantized in for older directories), HQQ dequantized into the source's dtype,
    bitsandbytes, torchao and full precision through transformers in their stored dtype."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    if config.get("quantization_config", {}).get("quant_method") == "hqq":
        from . import hqq

        return hqq.load(Path(model_dir), device)
    if config.get("quantization_config", {}).get("quant_method") in ("gptq", "awq"):
        import torch

        from . import gptq

        dtype = variant_record(model_dir).get("compute_dtype")
        return gptq.load(Path(model_dir), device, getattr(torch, dtype) if dtype else None)
    return load_causal_lm(model_dir, device=device)
