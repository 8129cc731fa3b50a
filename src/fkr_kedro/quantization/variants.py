"""Typed quantization variants and their validation, done before any model loads.

A variant is one quantized (or full-precision) copy of the source model. Its ``name`` is
the Kedro namespace of its pipeline instance, so it must be letters, digits and
underscores; left out, it is built from method, bits and group size
(``gptq_w4_g32``, ``rtn_w2_g32``, ``bnb_nf4``, ``fp``).

A calibrated method's variant (GPTQ, AWQ: :attr:`~.methods.Method.calibrated`) is
quantized once per calibration draw (``quantize.calibration_seeds``, :func:`expand_draws`):
the first draw keeps the variant's name, further draws get ``_draw1``, ``_draw2`` ...
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, NoReturn

import torch
from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator
from transformers import PretrainedConfig

from .awq_gqa import attention_heads
from .methods import METHODS, Method, quantizable_linears

BNB_CPU_BLOCK = 64
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


class VariantError(ValueError):
    """A variant that cannot run as configured; the message names the variant and the fix."""


class VariantSpec(BaseModel):
    """One variant. ``bits`` and ``group_size`` default to the method's defaults; ``sym``
    (a grid symmetric around zero instead of a min-max grid with a zero point) and
    ``desc_act`` (GPTQ's activation order) default to off; ``calibration_size`` is how many
    calibration texts GPTQ and AWQ use (the first ones); ``max_fallback_fraction`` is the
    share of modules GPTQ/AWQ may leave to GPTQModel's fallback (RTN) before the variant
    fails (default 0: every module gets the method its name says); ``dtype`` (``fp`` only)
    saves the reference in another dtype (``fp`` with ``dtype: bfloat16`` is ``fp_bf16``)
    to separate a dtype's loss from quantization's; ``device`` is where quantization runs
    ('auto' picks CUDA when present).

    ``calibration_seed`` (calibrated methods only; default 0) shuffles the corpus into the
    calibration texts (:func:`~.calibration.calibration_texts`); :func:`expand_draws` sets it
    per draw from ``quantize.calibration_seeds`` and ``draw`` to the draw's index (0: the
    first draw, which keeps the variant's name). At seed 0 it is left out of
    :meth:`model_dump`, like ``awq_gqa`` at its default, so variants written before it
    existed (always seed 0) stay valid; their calibration texts' hash already held it.

    ``awq_gqa`` (``awq`` only) is what AWQ does with ``o_proj`` under grouped-query
    attention: ``skip`` (default) leaves it unscaled, the reference AWQ's rule, recorded as
    ``awq_unscaled_gqa``; ``average`` scales it by its AWQ scale averaged over each key-value
    head's query heads and folds that into ``v_proj`` (:mod:`.awq_gqa`), recorded as
    ``awq_gqa_average``, and the default name gets ``_gqaavg``. At its default it is left
    out of :meth:`model_dump` (and so of ``variant.json``'s fingerprint): variants written
    before the option existed are the same bytes and stay valid."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    method: str
    bits: int | None = None
    group_size: int | None = None
    calibration_size: int = Field(128, ge=1)
    sym: bool = False
    desc_act: bool = False
    max_fallback_fraction: float = Field(0.0, ge=0.0, le=1.0)
    dtype: str | None = None
    device: str = "auto"
    awq_gqa: Literal["skip", "average"] = "skip"
    calibration_seed: int | None = None  # filled to 0 for calibrated methods
    draw: int = Field(0, ge=0)  # set by expand_draws; not part of the fingerprint (the name is)

    @model_serializer(mode="wrap")
    def _default_awq_gqa_unrecorded(self, handler: Callable[[Any], dict]) -> dict:
        data = handler(self)
        if self.awq_gqa == "skip":
            data.pop("awq_gqa", None)
        if not self.calibration_seed:  # None (no calibration) or 0 (the seed before draws existed)
            data.pop("calibration_seed", None)
        data.pop("draw", None)
        return data

    @model_validator(mode="after")
    def _default_seed(self) -> VariantSpec:
        # Filled here, not from the input, so it stays out of model_fields_set: expand_draws
        # tells a variant's own seed (one draw) from the default (one copy per draw).
        if self.calibration_seed is None and self.method in METHODS and METHODS[self.method].calibrated:
            self.__dict__["calibration_seed"] = 0
        return self

    @property
    def variant_group(self) -> str:
        """The variant's name without its draw suffix: what the draws of one variant share."""
        return self.name.removesuffix(f"_draw{self.draw}") if self.draw else self.name

    @model_validator(mode="before")
    @classmethod
    def _fill_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("method") not in METHODS:
            if isinstance(data, dict) and "name" not in data:
                data = {**data, "name": str(data.get("method", ""))}
            return data
        method = METHODS[data["method"]]
        data = dict(data)
        if data.get("bits") is None and method.bits:
            data["bits"] = method.bits[0]
        if data.get("group_size") is None:
            data["group_size"] = method.default_group_size
        if "name" not in data:
            data["name"] = variant_name(
                method.name,
                data.get("bits"),
                data["group_size"],
                sym=data.get("sym", False),
                desc_act=data.get("desc_act", False),
                dtype=data.get("dtype"),
                awq_gqa=data.get("awq_gqa", "skip"),
            )
        return data


DTYPE_SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def variant_name(
    method: str,
    bits: int | None = None,
    group_size: int | None = None,
    sym: bool = False,
    desc_act: bool = False,
    dtype: str | None = None,
    awq_gqa: str = "skip",
) -> str:
    """The default name: ``fp``, ``fp_bf16``, ``bnb_nf4``, ``gptq_w4_g32``,
    ``rtn_w3_perchannel``, with ``_sym`` / ``_descact`` / ``_gqaavg`` (``awq_gqa: average``)
    appended when those are on."""
    if method not in METHODS or not METHODS[method].group_sizes:
        return f"{method}_{DTYPE_SHORT.get(dtype, dtype)}" if dtype else method
    group = "perchannel" if group_size == -1 else f"g{group_size}"
    return (f"{method}_w{bits}_{group}" + ("_sym" if sym else "") + ("_descact" if desc_act else "")
            + ("_gqaavg" if awq_gqa == "average" else ""))


def draw_name(name: str, draw: int) -> str:
    """The name of calibration draw ``draw`` of variant ``name``: the first keeps it."""
    return name if draw == 0 else f"{name}_draw{draw}"


def expand_draws(specs: Sequence[VariantSpec], calibration_seeds: Sequence[int]) -> list[VariantSpec]:
    """Every variant once per calibration draw where its method calibrates (the method
    registry's :attr:`~.methods.Method.calibrated`), else once: draw ``i`` of a variant is
    named :func:`draw_name` and calibrates with ``calibration_seeds[i]``. A variant that sets
    its own ``calibration_seed`` is that one draw. The draws follow their variant, in order."""
    seeds = list(calibration_seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise VariantError(
            f"quantize.calibration_seeds {seeds}: give one or more distinct seeds (e.g. [0] or [0, 1, 2])"
        )
    out = []
    for spec in specs:
        method = METHODS.get(spec.method)
        if method is None or not method.calibrated or "calibration_seed" in spec.model_fields_set:
            out.append(spec)
            continue
        out += [
            spec.model_copy(update={"name": draw_name(spec.name, i), "calibration_seed": seed, "draw": i})
            for i, seed in enumerate(seeds)
        ]
    return out


def validate_variants(
    specs: Sequence[VariantSpec],
    model_config_or_layer_widths: PretrainedConfig | Iterable[int],
    cuda_available: bool | None = None,
) -> list[VariantSpec]:
    """Check every variant against its method and the model; raise one :class:`VariantError`
    for the first problem found, naming the variant and the fix. Returns the specs."""
    heads = None  # (attention heads, key-value heads) when a model config is given
    if isinstance(model_config_or_layer_widths, PretrainedConfig):
        widths = {m.in_features for m in quantizable_linears(model_config_or_layer_widths).values()}
        heads = attention_heads(model_config_or_layer_widths) if _has_heads(model_config_or_layer_widths) else None
    else:
        widths = {int(w) for w in model_config_or_layer_widths}
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            raise VariantError(f"variant {spec.name!r} is listed twice: give one of them another name")
        seen.add(spec.name)
        _check(spec, widths, cuda_available, heads)
    return list(specs)


def _has_heads(config: PretrainedConfig) -> bool:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(text, "num_attention_heads", None) is not None


def _check(spec: VariantSpec, widths: set[int], cuda_available: bool, heads: tuple[int, int] | None = None) -> None:
    def fail(problem: str, fix: str) -> NoReturn:
        raise VariantError(f"variant {spec.name!r}: {problem}; {fix}")

    if not _NAME.fullmatch(spec.name):
        fail(
            "the name is not a valid Kedro namespace",
            "use letters, digits and underscores, starting with a letter (e.g. gptq_w4_g32)",
        )
    method = METHODS.get(spec.method)
    if method is None:
        fail(f"unknown method {spec.method!r}", f"use one of {', '.join(METHODS)}")
    _check_bits(spec, method, fail)
    _check_group_size(spec, method, widths, fail)
    if spec.draw and not spec.name.endswith(f"_draw{spec.draw}"):
        fail("draw is set by quantize.calibration_seeds, not per variant", "remove draw")
    for option in ("calibration_size", "sym", "desc_act", "max_fallback_fraction", "dtype", "awq_gqa",
                   "calibration_seed"):
        if option in spec.model_fields_set and option not in method.options:
            fail(f"method {method.name} takes no {option} option", f"remove {option} from this variant")
    if spec.awq_gqa == "average" and heads is not None and heads[1] >= heads[0]:
        fail(
            f"awq_gqa 'average' is for grouped-query attention and the model has none ({heads[0]} attention "
            f"heads, {heads[1]} key-value heads)",
            "remove awq_gqa",
        )
    if spec.dtype is not None and spec.dtype not in DTYPE_SHORT:
        fail(f"unknown dtype {spec.dtype!r}", f"use one of {', '.join(DTYPE_SHORT)}")
    if not _DEVICE.fullmatch(spec.device):
        fail(f"unknown device {spec.device!r}", "use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if spec.device.startswith("cuda") and not cuda_available:
        fail(f"device {spec.device!r} needs a CUDA GPU and none is visible", "set device to 'auto' or 'cpu'")
    on_cpu = spec.device == "cpu" or (spec.device == "auto" and not cuda_available)
    # bitsandbytes 0.50's CPU 4-bit kernels fail inside the library for such widths (seen: 32, 96).
    narrow = sorted(w for w in widths if w % BNB_CPU_BLOCK)
    if spec.method in ("bnb_nf4", "bnb_fp4") and on_cpu and narrow:
        fail(
            f"bitsandbytes' 4-bit CPU kernels need every quantized layer's input width to be a "
            f"multiple of {BNB_CPU_BLOCK} (not: {narrow})",
            "run this variant on a CUDA GPU, or widen the model",
        )


def _check_bits(spec: VariantSpec, method: Method, fail: Callable[[str, str], NoReturn]) -> None:
    if not method.bits:
        if spec.bits is not None:
            fail(f"method {method.name} keeps full precision and takes no bits", "remove bits")
        return
    if spec.bits in method.bits:
        return
    others = [m.name for m in METHODS.values() if spec.bits in m.bits]
    elsewhere = f"; {spec.bits}-bit is offered by {', '.join(others)}" if others else ""
    fail(
        f"method {method.name} does not support {spec.bits}-bit weights",
        f"use bits in {sorted(method.bits)}{elsewhere}",
    )


def _check_group_size(
    spec: VariantSpec, method: Method, widths: set[int], fail: Callable[[str, str], NoReturn]
) -> None:
    if not method.group_sizes:
        if spec.group_size is not None:
            fail(f"method {method.name} has no group size", "remove group_size")
        return
    if spec.group_size not in method.group_sizes:
        fail(
            f"group_size {spec.group_size} is not supported by {method.name}",
            f"use one of {list(method.group_sizes)} (-1 = one group per row)",
        )
    bad = sorted(w for w in widths if spec.group_size != -1 and w % spec.group_size)
    if bad:
        fitting = [g for g in method.group_sizes if g == -1 or all(w % g == 0 for w in widths)]
        fail(
            f"group_size {spec.group_size} does not divide the input width of every quantized layer "
            f"(widths {sorted(widths)}, not divisible: {bad})",
            f"use a group size that divides them all: {fitting}",
        )
