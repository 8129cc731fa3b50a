"""AWQ under grouped-query attention (GQA): the rule the method has, and an option.

**The rule.** AWQ scales each linear's input channels by an activation-aware factor ``s``
and folds ``1/s`` into the operation before it. For ``o_proj`` that operation is ``v_proj``
(through the attention-weighted sum), which works channel for channel only when
``v_proj``'s outputs are ``o_proj``'s inputs. Under GQA they are not: ``o_proj`` reads
``num_attention_heads * head_dim`` features, ``v_proj`` writes ``num_key_value_heads *
head_dim``, and each key-value head serves ``num_attention_heads / num_key_value_heads``
query heads. The reference AWQ (mit-han-lab/llm-awq PR #67), AutoAWQ, llm-compressor and
GPTQModel 7.0.0 (``awq_scale_optimize_shape_dependent_modules = ["self_attn.o_proj"]``: the
group is skipped when the weight shapes differ) therefore leave ``o_proj`` unscaled: it still
gets AWQ's grid and clipping search, only no scale. That is the method's own rule, not a
fallback, and it applies exactly when the model config has ``num_key_value_heads <
num_attention_heads`` (:func:`is_gqa`). :func:`label_gqa_rule` names those modules
:data:`UNSCALED_GQA` in ``variant.json`` so they count as AWQ.

**The option** (``VariantSpec.awq_gqa: average``): a scale that can be folded into
``v_proj`` must be equal on the ``n_rep`` query heads that share a key-value head. Layout
(transformers' ``repeat_kv``): query head ``h`` reads key-value head ``h // n_rep``, and
``o_proj``'s input feature ``h * head_dim + d`` is channel ``d`` of head ``h``, so

    s_kv = s.view(num_kv_heads, n_rep, head_dim).mean(1)          # v_proj's rows
    s_full = s_kv[:, None, :].expand(num_kv_heads, n_rep, head_dim).reshape(-1)  # o_proj's columns

(``scale.view(n_rep, -1).mean(0)`` would average channels of unrelated heads).
``v_proj``'s rows and bias are divided by ``s_kv`` and ``o_proj``'s columns multiplied by
``s_full``: the model computes the same function (:func:`apply_gqa_scale`). The scale is
searched as GPTQModel searches every other AWQ group: 20 ratios ``r``,
``s = x_mean**r / (w_mean**(1 - r) + 1e-4)`` normalized by ``sqrt(max * min)``,
each candidate scored by the mean squared error of ``o_proj``'s output with the
pseudo-quantized weight ``Q(W * s) / s`` on the calibration inputs; here each candidate is
averaged over the repeat group before it is scored, so the loss is that of the scale applied.
The error is computed from the Gram matrix ``H = sum x x^T`` of ``o_proj``'s inputs,
``mean ||(Q(W s)/s - W) x||^2 = tr(D H D^T) / (tokens * out_features)``, so one forward pass
over the calibration texts serves every layer.

**Why a pre-pass.** GPTQModel 7.0.0 has no extension point for it: the skip is decided in
``BaseQModel.awq_get_modules_for_scaling`` (no group is built), the scale search
(``AWQProcessor._search_best_scale``) has no constraint on the scale's shape, and
``apply_scale``/``scale_fc_fc`` divide the previous layer's last ``len(s)`` rows, which
fails for ``len(s) > v_proj.out_features``. Patching three private functions of a pinned
library is more fragile than this: the scaling runs on the float source model before
GPTQModel sees it (:func:`gqa_average_prescale`), GPTQModel then does its AWQ for every other
group and, on ``o_proj``, its clipping search and grid, on the already scaled weights (it
still skips its own ``v_proj -> o_proj`` scaling, as before).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PretrainedConfig

# variant.json labels of AWQ o_proj modules under GQA; both count as the method awq.
UNSCALED_GQA = "awq_unscaled_gqa"  # the reference rule: no activation-aware scale
AVERAGED_GQA = "awq_gqa_average"  # the option: the scale averaged over each key-value head's query heads
AWQ_RULES = (UNSCALED_GQA, AVERAGED_GQA)
# What GPTQModel's AWQ log says of a module that got its grid but no scale ("not applicable").
UNSCALED = "awq_unscaled"
# GPTQModel 7.0.0's llama-family definitions: the module whose scaling group is skipped on a
# shape mismatch with v_proj.
SKIPPED_SUFFIX = "self_attn.o_proj"

# variant.json's notes; {count} is "N of M modules".
NOTES = {
    UNSCALED_GQA: "o_proj unscaled under grouped-query attention ({count}), as in the reference AWQ",
    AVERAGED_GQA: "o_proj scaled by its AWQ scale averaged over each key-value head's query heads "
    "({count}; awq_gqa: average)",
}

N_GRID = 20  # GPTQModel 7.0.0's AWQ grid of ratios


def attention_heads(config: PretrainedConfig) -> tuple[int, int]:
    """(num_attention_heads, num_key_value_heads) of the model's text config; the key-value
    count equals the attention count when the config has none (multi-head attention)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = int(text.num_attention_heads)
    kv = getattr(text, "num_key_value_heads", None)
    return heads, int(kv) if kv else heads


def is_gqa(config: PretrainedConfig) -> bool:
    """Grouped-query attention: fewer key-value heads than attention heads."""
    heads, kv = attention_heads(config)
    return kv < heads


def label_gqa_rule(modules: dict[str, str], config: PretrainedConfig, awq_gqa: str = "skip",
                   averaged: set[str] | frozenset[str] = frozenset()) -> tuple[dict[str, str], list[str]]:
    """``modules`` (name -> method read from GPTQModel's log) with the GQA rule named:
    an ``o_proj`` GPTQModel quantized without a scale (:data:`UNSCALED`) becomes
    :data:`UNSCALED_GQA` when the model has GQA and ``awq_gqa`` is ``skip``, or
    :data:`AVERAGED_GQA` when it is one of ``averaged`` (scaled by :func:`gqa_average_prescale`).
    Without GQA nothing changes: an unscaled o_proj stays :data:`UNSCALED`, not the method.
    Returns the modules and the variant-level notes (one per rule present, with its count)."""
    if not is_gqa(config):
        return dict(modules), []
    out = {}
    for name, method in modules.items():
        if method == UNSCALED and name.endswith(SKIPPED_SUFFIX):
            if awq_gqa == "average" and name in averaged:
                method = AVERAGED_GQA
            elif awq_gqa == "skip":
                method = UNSCALED_GQA
        out[name] = method
    notes = []
    for rule in AWQ_RULES:
        count = sum(m == rule for m in out.values())
        if count:
            notes.append(NOTES[rule].format(count=f"{count} of {len(out)} modules"))
    return out, notes


# --- the average option --------------------------------------------------------------------


@dataclass(frozen=True)
class GqaAttention:
    """One attention block's v_proj and o_proj and its head layout."""

    name: str  # the attention module, e.g. model.layers.0.self_attn
    v_proj: torch.nn.Linear
    o_proj: torch.nn.Linear
    num_kv_heads: int
    n_rep: int  # query heads per key-value head
    head_dim: int


def gqa_attentions(model: torch.nn.Module) -> list[GqaAttention]:
    """Every attention block with separate ``v_proj`` and ``o_proj`` linears, with its layout
    checked against the config: ``v_proj`` writes ``num_kv_heads * head_dim``, ``o_proj``
    reads ``num_heads * head_dim``."""
    heads, kv = attention_heads(model.config)
    if kv >= heads or heads % kv:
        raise ValueError(f"{type(model).__name__}: no grouped-query attention ({heads} heads, {kv} key-value heads)")
    found = []
    for name, module in model.named_modules():
        v, o = getattr(module, "v_proj", None), getattr(module, "o_proj", None)
        if not (isinstance(v, torch.nn.Linear) and isinstance(o, torch.nn.Linear)):
            continue
        head_dim = o.in_features // heads
        if o.in_features != heads * head_dim or v.out_features != kv * head_dim:
            raise ValueError(
                f"{name}: o_proj reads {o.in_features} features and v_proj writes {v.out_features}, not "
                f"{heads} and {kv} heads of one head_dim: the key-value layout is not transformers' repeat_kv"
            )
        found.append(GqaAttention(name, v, o, kv, heads // kv, head_dim))
    if not found:
        raise ValueError(f"{type(model).__name__}: no attention block with separate v_proj and o_proj linears")
    return found


def average_over_repeats(scale: torch.Tensor, num_kv_heads: int, n_rep: int, head_dim: int) -> torch.Tensor:
    """A scale over o_proj's inputs (``num_kv_heads * n_rep * head_dim``) averaged over the
    query heads of each key-value head: one value per v_proj output row."""
    return scale.reshape(num_kv_heads, n_rep, head_dim).mean(dim=1).reshape(-1)


def expand_over_repeats(kv_scale: torch.Tensor, num_kv_heads: int, n_rep: int, head_dim: int) -> torch.Tensor:
    """A per-v_proj-row scale repeated for each query head that reads it (repeat_kv's layout)."""
    return kv_scale.reshape(num_kv_heads, 1, head_dim).expand(num_kv_heads, n_rep, head_dim).reshape(-1)


@torch.no_grad()
def apply_gqa_scale(attention: GqaAttention, kv_scale: torch.Tensor) -> None:
    """Divide v_proj's output rows (and bias) by ``kv_scale`` and multiply o_proj's input
    columns by its expansion: the same function, with o_proj's inputs scaled down. Computed
    in float32 and written back in the weights' dtype."""
    a = attention
    kv_scale = kv_scale.float().to(a.v_proj.weight.device)
    full = expand_over_repeats(kv_scale, a.num_kv_heads, a.n_rep, a.head_dim)
    a.v_proj.weight.copy_((a.v_proj.weight.float() / kv_scale[:, None]).to(a.v_proj.weight.dtype))
    if a.v_proj.bias is not None:
        a.v_proj.bias.copy_((a.v_proj.bias.float() / kv_scale).to(a.v_proj.bias.dtype))
    o = a.o_proj.weight
    o.copy_((o.float() * full.to(o.device)[None, :]).to(o.dtype))


def pseudo_quantize(w: torch.Tensor, bits: int, group_size: int, sym: bool) -> torch.Tensor:
    """GPTQModel 7.0.0's AWQ ``pseudo_quantize_tensor`` (min-max per group of input columns,
    or symmetric absmax): the dequantized weight."""
    shape = w.shape
    g = group_size if group_size > 0 else shape[-1]
    w = w.reshape(-1, g)
    if sym:
        max_int, min_int = 2 ** (bits - 1) - 1, -(2 ** (bits - 1))
        scales = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-5) / max_int
        q = torch.clamp(torch.round(w / scales), min_int, max_int) * scales
    else:
        max_int = 2**bits - 1
        max_val, min_val = w.amax(dim=1, keepdim=True), w.amin(dim=1, keepdim=True)
        scales = (max_val - min_val).clamp(min=1e-5) / max_int
        zeros = (-torch.round(min_val / scales)).clamp(0, max_int)
        q = (torch.clamp(torch.round(w / scales) + zeros, 0, max_int) - zeros) * scales
    return q.reshape(shape)


def _weight_mean(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """AWQ's per-input-channel mean of |W| normalized by each group's max (GPTQModel's
    ``_compute_awq_weight_mean``)."""
    g = group_size if group_size > 0 else w.shape[1]
    w = w.abs().reshape(w.shape[0], -1, g)
    w = w / (w.amax(dim=2, keepdim=True) + 1e-6)
    return w.reshape(w.shape[0], -1).mean(dim=0)


@dataclass
class _Inputs:
    """Running statistics of one o_proj's inputs."""

    gram: torch.Tensor  # sum x x^T, float32
    abs_sum: torch.Tensor  # sum |x| per feature
    tokens: int = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).float()
        self.gram.addmm_(x.T, x)
        self.abs_sum += x.abs().sum(dim=0)
        self.tokens += x.shape[0]


@torch.no_grad()
def _collect_inputs(model: torch.nn.Module, attentions: list[GqaAttention], batches: Iterator[dict]) -> list[_Inputs]:
    device = next(model.parameters()).device
    stats = [
        _Inputs(torch.zeros(a.o_proj.in_features, a.o_proj.in_features, device=device),
                torch.zeros(a.o_proj.in_features, device=device))
        for a in attentions
    ]

    def hook(index: int):
        def record(module: torch.nn.Module, args: tuple) -> None:
            stats[index].add(args[0])

        return record

    handles = [a.o_proj.register_forward_pre_hook(hook(i)) for i, a in enumerate(attentions)]
    try:
        for batch in batches:
            model(**{k: batch[k].to(device) for k in ("input_ids", "attention_mask") if k in batch}, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return stats


@dataclass(frozen=True)
class ScaleSearch:
    """What the search found for one attention block."""

    ratio: float  # the grid ratio r chosen
    loss: float  # mean squared o_proj output error with that scale, quantized
    loss_unscaled: float  # the same without a scale (the reference rule)
    kv_scale: torch.Tensor  # per v_proj output row


@torch.no_grad()
def search_gqa_scale(attention: GqaAttention, inputs: _Inputs, bits: int, group_size: int, sym: bool) -> ScaleSearch:
    """AWQ's grid search for o_proj's input scale, each candidate averaged over the repeat
    group before it is scored (module docstring)."""
    a = attention
    w = a.o_proj.weight.float()
    gram = inputs.gram.to(w.device)
    denominator = max(inputs.tokens, 1) * w.shape[0]

    def loss(full_scale: torch.Tensor | None) -> float:
        if full_scale is None:
            diff = pseudo_quantize(w, bits, group_size, sym) - w
        else:
            diff = pseudo_quantize(w * full_scale, bits, group_size, sym) / full_scale - w
        return float(((diff @ gram) * diff).sum() / denominator)

    x_mean = (inputs.abs_sum / max(inputs.tokens, 1)).to(w.device)
    w_mean = _weight_mean(w, group_size)
    best: ScaleSearch | None = None
    unscaled = loss(None)
    for step in range(N_GRID):
        ratio = step / N_GRID
        scale = (x_mean.pow(ratio) / (w_mean.pow(1 - ratio) + 1e-4)).clamp(min=1e-4)
        scale = scale / (scale.max() * scale.min()).sqrt()
        scale[~torch.isfinite(scale)] = 1
        kv_scale = average_over_repeats(scale, a.num_kv_heads, a.n_rep, a.head_dim)
        value = loss(expand_over_repeats(kv_scale, a.num_kv_heads, a.n_rep, a.head_dim))
        if best is None or value < best.loss:
            best = ScaleSearch(ratio, value, unscaled, kv_scale.cpu())
    assert best is not None
    return best


def scale_gqa_average(model: torch.nn.Module, batches: Iterator[dict], bits: int, group_size: int,
                      sym: bool) -> dict[str, ScaleSearch]:
    """Search and apply the averaged scale on every attention block of ``model`` (in place):
    one forward pass over ``batches`` (tokenized calibration texts) collects o_proj's inputs.
    Returns the search per attention block."""
    attentions = gqa_attentions(model)
    stats = _collect_inputs(model, attentions, batches)
    found = {}
    for attention, inputs in zip(attentions, stats):
        found[attention.name] = search_gqa_scale(attention, inputs, bits, group_size, sym)
        apply_gqa_scale(attention, found[attention.name].kv_scale)
    return found


def gqa_average_prescale(source_dir: Path, calibration_texts: list[str], bits: int, group_size: int, sym: bool,
                         device: str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, ScaleSearch]]:
    """The ``average`` pre-pass on the source model as stored (its own dtype; float32 math):
    returns the scaled ``v_proj``/``o_proj`` tensors (state-dict name -> tensor, on the CPU)
    to put into the model GPTQModel loads, and the search per attention block."""
    from transformers import AutoModelForCausalLM

    from .common import load_tokenizer, source_dtype

    tokenizer = load_tokenizer(source_dir)
    model = AutoModelForCausalLM.from_pretrained(source_dir, dtype=source_dtype(source_dir)).to(device).eval()
    batches = (tokenizer(text, return_tensors="pt") for text in calibration_texts)
    found = scale_gqa_average(model, batches, bits, group_size, sym)
    names = {f"{a}.{proj}.{p}" for a in found for proj in ("v_proj", "o_proj") for p in ("weight", "bias")}
    tensors = {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k in names}
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return tensors, found
