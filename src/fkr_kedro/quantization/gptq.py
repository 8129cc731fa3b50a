"""GPTQ and AWQ through GPTQModel 7.0.0, and loading of any GPTQModel-format directory.

A quantized directory holds, per quantized linear layer, the packed integer weights
(``qweight``, int32 words), fp16 ``scales`` and packed ``qzeros`` per group, and for the
GPTQ format ``g_idx`` (the group of each input column); config.json carries the
``quantization_config`` and quantize_config.json GPTQModel's full settings.

Calibration runs in the source's dtype (float32 for a trained or GGUF-dequantized model;
AWQ in bfloat16 then, see :func:`calibration_dtype`): GPTQModel 7.0.0 quantizes and packs
float32 models on the CPU, and calibrating a float32 model in float16 lets its residual
stream overflow (a Gemma 3 270M reached inf by layer 8,
and GPTQModel then quantized 70 of 126 modules by its RTN fallback without failing). A
forward hook on every decoder layer stops the variant at the first non-finite output
(:class:`CalibrationError`), and the method each module actually got is read from
GPTQModel's own quantization log (:func:`module_methods`) and checked against
``spec.max_fallback_fraction``. AWQ's ``o_proj`` under grouped-query attention gets no
activation-aware scale by the method's own rule; it is recorded as such
(``awq_unscaled_gqa``, or ``awq_gqa_average`` with ``awq_gqa: average``) and counts as AWQ
(:mod:`.awq_gqa`).

For evaluation, :func:`load` dequantizes the packed weights into plain ``nn.Linear`` layers
in the variant's compute dtype (the source's): GPTQModel's CPU kernels take only float16 or
bfloat16 activations (TorchLinear, TorchAwqLinear; TorchFusedLinear accepts float32 but casts
to bfloat16 around torch's int4 matmul, and only at 4 bits), so a kernel would mix the
quantization loss with a bf16-versus-fp32 difference that the ``fp`` and bitsandbytes
variants do not have. The weights are exactly the stored ones: scale * (q - zero), computed
in float32 from the fp16 scales.

GPTQModel is imported on first use (it takes seconds and sets process-wide defaults), by
:func:`gptqmodel`, which bridges what 7.0.0 expects of its surroundings: it reads
``create_repo``/``has_file``/``list_repo_tree`` from ``transformers.utils.hub``, which
transformers 5.23 no longer has, and its model registry imports torchvision (for InternVL)
at import time, while no CPU build of torchvision exists for torch 2.13 here.
"""
from __future__ import annotations

import collections
import contextlib
import functools
import importlib.util
import io
import logging
import math
import os
import re
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from ..modeling.load import CausalLM, resolve_device
from .awq_gqa import AWQ_RULES, UNSCALED, gqa_average_prescale, label_gqa_rule
from .common import load_tokenizer, quiet_load_report, source_dtype
from .methods import quantizable_linears
from .progress import LayerProgress
from .variants import VariantSpec

log = logging.getLogger(__name__)

# Sizes GPTQModel's CPU thread pools on machines with few cores (asked for by the project's
# setup notes; 7.0.0 itself sizes them from os.cpu_count()).
os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")


@functools.cache
def gptqmodel() -> types.ModuleType:
    import huggingface_hub
    from transformers.utils import hub

    for name, fn in {
        "create_repo": huggingface_hub.create_repo,
        "has_file": huggingface_hub.file_exists,
        "list_repo_tree": huggingface_hub.list_repo_tree,
    }.items():
        if not hasattr(hub, name):
            setattr(hub, name, fn)
    with _torchvision_placeholder():
        import gptqmodel
        from gptqmodel.looper.loop_processor import LoopProcessor

    # 7.0.0 also appends a JSON record of every quantized module to a file it creates in the
    # current working directory; the per-module summary is saved with the model anyway
    # (quant_log.csv), so those records are dropped rather than left wherever the caller runs.
    LoopProcessor._async_log_writer = lambda self, stat: None
    return gptqmodel


class CalibrationError(RuntimeError):
    """Calibration that cannot give the variant its method: non-finite activations, or more
    modules left to a fallback than the variant allows. The message names the fix."""


def quantize(source_dir: Path, spec: VariantSpec, calibration_texts: list[str], out_dir: Path) -> dict:
    """GPTQ or AWQ (``spec.method``) calibrated on ``calibration_texts``, one text per batch.
    Returns what :func:`run_gptqmodel` found (compute dtype, method per module). AWQ with
    ``awq_gqa: average`` first scales every ``v_proj -> o_proj`` pair of the float source by
    the averaged scale (:func:`~.awq_gqa.gqa_average_prescale`), then hands that model to
    GPTQModel."""
    gm = gptqmodel()
    common = dict(bits=spec.bits, group_size=spec.group_size, sym=spec.sym, offload_to_disk=False)
    prescaled, facts = None, {}
    if spec.method == "awq":
        config = gm.AWQConfig(format="gemm", **common)
        if spec.awq_gqa == "average":
            prescaled, search = gqa_average_prescale(
                source_dir, calibration_texts, spec.bits, spec.group_size, spec.sym, resolve_device(spec.device)
            )
            facts["awq_gqa_search"] = {
                name: {"ratio": found.ratio, "loss": found.loss, "loss_unscaled": found.loss_unscaled}
                for name, found in search.items()
            }
    else:
        config = gm.GPTQConfig(desc_act=spec.desc_act, **common)
    return {**run_gptqmodel(source_dir, config, calibration_texts, out_dir, spec, prescaled), **facts}


def run_gptqmodel(
    source_dir: Path, config: Any, calibration_texts: list[str] | None, out_dir: Path, spec: VariantSpec,
    prescaled: dict[str, torch.Tensor] | None = None, progress: bool | None = None,
) -> dict:
    """Load ``source_dir`` into GPTQModel with ``config`` in the source's dtype (with the
    ``prescaled`` tensors, by state-dict name, put in place of the stored ones), quantize,
    check every module got ``spec.method`` (within ``spec.max_fallback_fraction``), save
    model and tokenizer. Returns ``{"compute_dtype": ..., "modules": {name: method}}``, and
    ``notes`` when a rule of the method applied (AWQ under grouped-query attention).

    GPTQ and AWQ show a progress bar over the decoder layers (when ``progress``; by default
    when stderr is a terminal) and log the estimated and the measured time of the
    layer-by-layer pass (:class:`~.progress.LayerProgress`)."""
    gm = gptqmodel()
    dtype = calibration_dtype(source_dir, config.method)
    with _no_animation_without_terminal():
        model = gm.GPTQModel.load(str(source_dir), config, device=resolve_device(spec.device), dtype=dtype)
    if prescaled:
        _put_weights(model, prescaled)
    # 7.0.0's quantize() takes calibration_data_min_length but never passes it on, and the
    # default drops every text of 10 tokens or fewer: short factual statements would all go.
    model.prepare_dataset = functools.partial(model.prepare_dataset, calibration_data_min_length=0)
    # AWQ's default packer is a CUDA kernel; the torch one writes the same GEMM format anywhere.
    backend = gm.BACKEND.AWQ_TORCH if config.method == "awq" else gm.BACKEND.AUTO
    with (
        _finite_activations(model.model, spec, dtype) as check,
        _no_animation_without_terminal(),
        _layer_progress(model, spec, progress),
    ):
        try:
            result = model.quantize(calibration_texts or None, batch_size=1, backend=backend)
        except Exception:
            check()  # a non-finite activation is the cause to report, when there was one
            raise
        check()
    linears = quantizable_linears(model.model.config)
    modules, notes = module_methods(result, linears), []
    if spec.method == "awq":
        averaged = {name.removesuffix(".weight") for name in prescaled or {} if name.endswith("o_proj.weight")}
        modules, notes = label_gqa_rule(modules, model.model.config, spec.awq_gqa, averaged)
    check_fallbacks(spec, modules)
    # GPTQModel's save prints the folder's file list and each config file's content (about
    # 40 lines a variant); they are in the folder itself, so they go to the debug log.
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        model.save(str(out_dir))
    log.debug("GPTQModel's save of %s printed:\n%s", out_dir, printed.getvalue())
    load_tokenizer(source_dir).save_pretrained(out_dir)
    return {
        "compute_dtype": str(source_dtype(source_dir)).removeprefix("torch."),
        "calibration_dtype": str(dtype).removeprefix("torch."),
        "modules": modules,
        **({"notes": notes} if notes else {}),
    }


def _put_weights(model: Any, tensors: dict[str, torch.Tensor]) -> None:
    """Copy ``tensors`` (state-dict names of the transformers model) into the model
    GPTQModel loaded, cast to its dtype. GPTQModel quantizes that in-memory model when
    ``offload_to_disk`` is off; with it on it would stream the stored weights instead."""
    if getattr(model, "turtle_model", None) is not None:
        raise RuntimeError(
            "GPTQModel loaded the model lazily from disk (offload_to_disk): pre-scaled weights would be lost"
        )
    state = model.model.state_dict()
    if missing := sorted(set(tensors) - set(state)):
        raise KeyError(f"GPTQModel's model has no {missing[:3]}")
    with torch.no_grad():
        for name, tensor in tensors.items():
            state[name].copy_(tensor.to(state[name].dtype))


def calibration_dtype(source_dir: Path, method: str = "gptq") -> torch.dtype:
    """The source's own dtype: GPTQModel 7.0.0 calibrates, quantizes and packs float32,
    bfloat16 and float16 models alike. Never a narrower range than the source's (float16
    for a float32 model overflows the residual stream of real models).

    AWQ is the exception: for a float32 source it calibrates in bfloat16 (float32's range).
    7.0.0's AWQ scale search keeps a "master copy" of each weight as
    ``weight.to(torch.float32).cpu()``, which for a float32 weight on the CPU is the weight
    itself, so every candidate scale is applied on top of the previous ones: calibrated in
    float32, the tiny test Llama's AWQ w4 logits were 19% (of the mean logit) off the
    source's, against 0.6% calibrated in bfloat16."""
    dtype = source_dtype(source_dir)
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        dtype = torch.float32
    if str(method).lower().endswith("awq") and dtype == torch.float32:
        return torch.bfloat16
    return dtype


# What GPTQModel 7.0.0's processors write as a module's loss: a number when the method ran
# ("0.0000605"), "<strategy> fallback" when the Hessian stayed non positive-definite and
# "fallback(<strategy>): <error>" when too few calibration tokens reached the module, and
# "rtn: <error>" for weight-only RTN. AWQ writes "not applicable" for a module it quantized
# without an activation-aware scale (its group was skipped, e.g. o_proj when v_proj's shape
# differs, or it went to the low-sample fallback).
_PROCESS_METHOD = {"gptq": "gptq", "gptq v2": "gptq", "awq": "awq", "weight_only_rtn": "rtn"}


def module_methods(quant_log: dict[str, list[dict]] | list[dict], linears: Iterable[str]) -> dict[str, str]:
    """The method each quantizable linear was actually quantized with, read from GPTQModel's
    log (what ``quantize()`` returns: ``{processor: [entry, ...]}``, or one list of entries):
    ``gptq``, ``awq`` or ``rtn`` when that method ran, ``<strategy>_fallback`` (e.g.
    ``rtn_fallback``) when GPTQ/AWQ gave the module to its fallback, ``awq_unscaled`` when
    AWQ quantized it without a scale (:func:`~.awq_gqa.label_gqa_rule` names the GQA rule
    among those), ``nonfinite`` when the logged loss is NaN or inf, ``skipped`` when no entry
    names the module."""
    entries = quant_log if isinstance(quant_log, list) else [e for log in quant_log.values() for e in log]
    names = list(linears)
    methods = dict.fromkeys(names, "skipped")
    for entry in entries:
        method = _PROCESS_METHOD.get(str(entry.get("process", "")).lower())
        if method is None:
            continue
        suffix = f".{entry.get('layer')}.{entry.get('module')}"
        matches = [n for n in names if n.endswith(suffix)]
        if len(matches) != 1:
            raise ValueError(
                f"GPTQModel's log names module {suffix[1:]!r}, which matches {matches or 'no'} linear layer"
            )
        methods[matches[0]] = _entry_method(method, str(entry.get("loss", "")))
    return methods


def _entry_method(method: str, loss: str) -> str:
    loss = loss.strip().lower()
    if "fallback" in loss:
        # "rtn fallback" (Hessian not positive-definite) or "fallback(rtn): 0.0012" (too few samples)
        found = re.search(r"fallback\s*\((\w+)\)|(\w+)\s+fallback", loss)
        return f"{found.group(1) or found.group(2)}_fallback" if found else "fallback"
    if method == "rtn":
        return "rtn"
    if method == "awq" and loss == "not applicable":
        return UNSCALED
    try:
        value = float(loss)
    except ValueError:
        return f"{method}?"  # a loss this parser does not know; counted as not the method
    return method if math.isfinite(value) else "nonfinite"


# Labels that are the method under one of its own rules, not a fallback.
METHOD_RULES = {"awq": AWQ_RULES}


def by_method(method: str, module_method: str) -> bool:
    """Whether a module recorded as ``module_method`` got ``method`` (itself, or one of the
    method's rules: AWQ's o_proj under grouped-query attention)."""
    return module_method == method or module_method in METHOD_RULES.get(method, ())


def fallback_fraction(method: str, modules: dict[str, str]) -> float:
    """Share of the quantizable linears that did not get ``method``."""
    return sum(not by_method(method, m) for m in modules.values()) / len(modules) if modules else 0.0


def check_fallbacks(spec: VariantSpec, modules: dict[str, str]) -> None:
    fraction = fallback_fraction(spec.method, modules)
    if fraction <= spec.max_fallback_fraction:
        return
    others = collections.Counter(m for m in modules.values() if not by_method(spec.method, m))
    first = next(n for n, m in modules.items() if not by_method(spec.method, m))
    raise CalibrationError(
        f"variant {spec.name!r}: {fraction:.1%} of its {len(modules)} quantized modules did not get "
        f"{spec.method} ({dict(others)}; first: {first}), more than max_fallback_fraction "
        f"{spec.max_fallback_fraction}: it would be reported as {spec.method} while it is not. "
        "Check GPTQModel's log for the cause (a non positive-definite Hessian: too few or too "
        "uniform calibration texts; modules no text reaches), give more calibration texts, or "
        "raise max_fallback_fraction to accept the mix (it is recorded in variant.json)"
        + (
            f". {UNSCALED}: AWQ quantized the module without an activation-aware scale (its scaling "
            "group was skipped, or too few samples reached it); under grouped-query attention "
            "that is o_proj's rule, but this model has none"
            if UNSCALED in others else ""
        )
    )


@contextmanager
def _finite_activations(model: torch.nn.Module, spec: VariantSpec, dtype: torch.dtype) -> Iterator[Callable[[], None]]:
    """Forward hooks on every decoder layer while GPTQModel calibrates: the first layer
    whose output holds inf or NaN is recorded (and raised, where GPTQModel lets a hook's
    error through); the check it yields raises :class:`CalibrationError` naming it."""
    layers = _decoder_layers(model)
    bad: list[int] = []

    def hook(index: int) -> Callable:
        def check_output(module: torch.nn.Module, args: Any, output: Any) -> None:
            hidden = output[0] if isinstance(output, (tuple, list)) else output
            if not bad and isinstance(hidden, torch.Tensor) and not torch.isfinite(hidden).all():
                bad.append(index)
                raise error()

        return check_output

    def error() -> CalibrationError:
        return CalibrationError(
            f"variant {spec.name!r}: decoder layer {bad[0]} produced non-finite activations (inf/NaN) "
            f"while calibrating in {str(dtype).removeprefix('torch.')}: the residual stream exceeds "
            "that dtype's range, and GPTQModel would quantize the layers after it by its RTN "
            "fallback. Load the source in float32 or bfloat16 (base_model.dtype) and quantize again"
        )

    def check() -> None:
        if bad:
            raise error()

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        yield check
    finally:
        for handle in handles:
            handle.remove()


# Methods GPTQModel quantizes layer by layer, calling the model's layer_callback after each;
# RTN (weight-only) goes through another loop, which calls none.
_LAYERWISE = ("gptq", "awq")


@contextmanager
def _layer_progress(model: Any, spec: VariantSpec, progress: bool | None) -> Iterator[None]:
    """:class:`~.progress.LayerProgress` set as ``model.layer_callback`` (which GPTQModel
    7.0.0's ModuleLooper reads when ``quantize()`` builds it) while the body runs."""
    if spec.method not in _LAYERWISE:
        yield
        return
    if progress is None:
        progress = getattr(sys.stderr, "isatty", lambda: False)()
    layers = len(_decoder_layers(model.model))
    with LayerProgress(spec.name, spec.method, layers, progress=progress) as callback:
        model.layer_callback = callback
        try:
            yield
        finally:
            del model.layer_callback


def _decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    lists = [m for n, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and n.endswith("layers")]
    if not lists:
        raise ValueError(f"{type(model).__name__}: no ModuleList of decoder layers (named '...layers') found")
    return max(lists, key=len)


def load(model_dir: Path, device: str = "auto", dtype: torch.dtype | None = None) -> CausalLM:
    """Reload a GPTQ/AWQ directory as a regular transformers model whose quantized linears
    hold their dequantized weights (scale * (q - zero), exactly the stored grid) in ``dtype``
    (default: the dtype the directory was quantized in, i.e. the source's), so its
    activations are computed in the same dtype as the ``fp`` variant's. Unpacking is
    GPTQModel's own (its torch kernels' ``dequantize_weight`` and AWQ's ``dequantize_gemm``)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    gm = gptqmodel()
    from gptqmodel.nn_modules.qlinear import AWQuantLinear, BaseQuantLinear, PackableQuantLinear
    from gptqmodel.quantization.awq.utils.packing_utils import dequantize_gemm

    model_dir = Path(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    dtype = dtype or source_dtype(model_dir)
    quant = config.quantization_config
    backend = gm.BACKEND.AWQ_TORCH if quant.get("quant_method") == "awq" else gm.BACKEND.TORCH
    # Unpacked on the CPU in float16 (the stored dtype of the scales, so nothing is rounded).
    with _no_animation_without_terminal():
        packed = gm.GPTQModel.load(str(model_dir), device="cpu", dtype=torch.float16, backend=backend).model
    weights: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, module in packed.named_modules():
            if isinstance(module, AWQuantLinear):
                scales = module.scales.float()
                w = dequantize_gemm(module.qweight, module.qzeros, scales, module.bits, module.group_size)
            elif isinstance(module, PackableQuantLinear):
                module.scales = module.scales.float()
                w = module.dequantize_weight()
            elif isinstance(module, BaseQuantLinear):
                raise TypeError(f"{model_dir}: no dequantization for GPTQModel kernel {type(module).__name__}")
            else:
                continue
            weights[f"{name}.weight"] = w[: module.in_features, : module.out_features].T.contiguous()
            if getattr(module, "bias", None) is not None:
                weights[f"{name}.bias"] = module.bias.float()
    del packed
    del config.quantization_config
    expected = {f"{n}.weight" for n in quantizable_linears(config)}
    if missing := sorted(expected - set(weights)):
        raise ValueError(f"{model_dir}: no quantized weights for {missing[:3]}{'...' if len(missing) > 3 else ''}")
    with quiet_load_report():
        model = AutoModelForCausalLM.from_pretrained(model_dir, config=config, dtype=dtype)
    state = model.state_dict()
    for key, w in weights.items():
        state[key].copy_(w.to(state[key].dtype))
    model = model.to(resolve_device(device)).eval()
    return CausalLM(model=model, tokenizer=load_tokenizer(model_dir))


@contextmanager
def _no_animation_without_terminal() -> Iterator[None]:
    """GPTQModel 7.0.0 redraws its progress bars (logbar) after every calibration row, also
    into log files and Slurm output: logbar turns animation off for CI variables, not for a
    redirected stdout. Measured on the scaling sweep's 4x64 model at 3 bits, 128 rows: 4.3 s
    a quantization with the redraws, 2.2 s without, the same accuracies (docs/scaling.md), and
    most of the log's lines. Without a terminal, TERM=dumb (logbar's "no terminal" signal)
    while GPTQModel runs; in a terminal the bars stay."""
    if getattr(sys.stdout, "isatty", lambda: False)():
        yield
        return
    with mock.patch.dict(os.environ, {"TERM": "dumb"}):  # restores TERM, or its absence, afterwards
        yield


@contextmanager
def _torchvision_placeholder() -> Iterator[None]:
    """An empty ``torchvision`` while GPTQModel imports, when the real one is absent; only
    its InternVL image preprocessing would touch it."""
    if importlib.util.find_spec("torchvision") is not None:
        yield
        return
    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
    modules = [types.ModuleType(name) for name in names]
    modules[0].transforms, modules[1].functional = modules[1], modules[2]
    modules[2].InterpolationMode = None
    sys.modules.update(zip(names, modules))
    try:
        yield
    finally:
        for name in names:
            sys.modules.pop(name, None)
