"""Neuron attribution by log-probability increase (Yu & Ananiadou 2024), from captured
activations.

    Imp(v) = log p(w | v + h) - log p(w | h)

``w`` is the correct answer's first token (``{set}.answer_token`` in the cache), ``v`` a
component's contribution to the residual stream at the last prompt token, and ``h`` the
residual stream just before that component is added, read out through the model's own final
norm and ``lm_head`` (modules called, weights never read):

* attention output of block ``l``: ``h = resid_pre_l`` (``resid_post[:, l]``, layer 0 =
  embeddings), ``v = attn_out[:, l]``;
* FFN neuron ``i`` of block ``l``: ``h = resid_mid_l = resid_pre_l + attn_out_l`` (the residual
  stream the FFN writes into, as in the authors' code), ``v = a_i * W_down[:, i]``, computed as
  ``down_proj(a_i e_i) - down_proj(0)`` by CALLING the (possibly quantized) ``down_proj`` on a
  batch of one-hot-scaled activation rows, never by reading its weight;
* whole MLP of block ``l``: ``h = resid_mid_l``, ``v = mlp_out[:, l]``.

``norm="final_scale"`` (default, as in the authors' code) divides every vector by the RMS of
the final layer's residual at that position instead of renormalising each ``v + h`` (the
final norm's scale is that of the real forward pass); ``norm="renorm"`` applies the final
norm to each ``v + h`` (a logit lens). The final-scale mode assumes an RMSNorm final norm.

Threshold: ``tau`` = the lowest score among the top-``k`` (300) FFN neurons of the
full-precision model, per prompt; per layer and variant we count the FFN neurons whose score
is at least ``tau`` (so the reference model's counts sum to ``k``), average over prompts, and
compare the per-layer attention and FFN contributions (mean Imp) against the reference.

Cost: for each prompt and layer, ``d_mlp`` rows through the head (``d_mlp x d x vocab`` MACs:
2 x 10^13 FLOP a layer for Qwen2.5-7B, an estimated 2-5 s a prompt on an H100, not measured),
bounded by ``max_prompts``; ``candidates=K``
ranks neurons by a first-order estimate (gradient of log p(w) at ``h`` dotted with ``v``) and
scores only the top ``K`` a layer exactly (the rest keep the estimate).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..modeling.structure import block_modules, compute_dtype, decoder_layers, final_norm, module_device, unwrap_model
from .capture import ActivationCache
from .statistics import StatisticsSettings, add_holm, mean, paired
from .statistics import stderr as standard_error

ATTRIBUTION_COLUMNS = [
    "variant", "layer", "metric", "value", "ci_low", "ci_high", "stderr",
    "delta", "delta_ci_low", "delta_ci_high", "p_value", "p_holm",
]


@dataclass
class AttributionScores:
    """Imp scores of one model for a subset of prompts.

    ``rows [P]`` rows of the prompt table, ``answer_token [P]``, ``ffn [P, L, d_mlp]`` one score
    per FFN neuron, ``attn [P, L]`` the attention output's score, ``mlp [P, L]`` the whole
    MLP output's score (float32)."""

    rows: torch.Tensor
    answer_token: torch.Tensor
    ffn: torch.Tensor
    attn: torch.Tensor
    mlp: torch.Tensor
    metadata: dict[str, str] = field(default_factory=dict)

    _KEYS = ("rows", "answer_token", "ffn", "attn", "mlp")

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_file({k: getattr(self, k).contiguous() for k in self._KEYS}, str(path), metadata=dict(self.metadata))

    @classmethod
    def load(cls, path: str | Path) -> AttributionScores:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        t = load_file(str(path))
        return cls(**{k: t[k] for k in cls._KEYS}, metadata=metadata)


class _Readout:
    """log p(w | x) through the model's final norm and head for rows ``x [n, d]``."""

    def __init__(self, model, norm_mode: str):
        if norm_mode not in ("final_scale", "renorm"):
            raise ValueError(f"norm must be 'final_scale' or 'renorm', got {norm_mode!r}")
        self.norm = final_norm(model)
        self.head = model.get_output_embeddings()
        self.dtype = compute_dtype(self.norm, getattr(model, "dtype", torch.float32))
        self.device = next(self.head.parameters()).device
        self.mode = norm_mode
        self.eps = float(getattr(self.norm, "variance_epsilon", getattr(self.norm, "eps", 1e-6)))

    def rms(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        return torch.sqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

    def logp(self, x: torch.Tensor, w: int, ref_rms: torch.Tensor | None) -> torch.Tensor:
        x = x.to(self.device)
        y = self.norm(x.to(self.dtype))
        if self.mode == "final_scale":
            # norm(x) * rms(x) = g * x: rescale by the reference RMS instead.
            y = (y.float() * (self.rms(x) / ref_rms.to(self.device))).to(self.dtype)
        return torch.log_softmax(self.head(y).float(), dim=-1)[..., w]


def neuron_contributions(down_proj: torch.nn.Module, act: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """``[stop-start, d]``: the residual-stream contribution of neurons ``start..stop-1`` given
    their activations ``act [d_mlp]``, by calling ``down_proj`` on one-hot-scaled rows."""
    c = stop - start
    x = torch.zeros(c, act.shape[-1], dtype=act.dtype, device=act.device)
    x[torch.arange(c, device=act.device), torch.arange(start, stop, device=act.device)] = act[start:stop]
    zero = down_proj(torch.zeros(1, act.shape[-1], dtype=act.dtype, device=act.device))
    return down_proj(x) - zero


@torch.no_grad()
def attribute(
    model,
    cache: ActivationCache,
    prompt_set: str = "one_hop",
    max_prompts: int | None = 64,
    norm: str = "final_scale",
    candidates: int | None = None,
    max_logits: int = 2**25,
    progress: bool = True,
) -> AttributionScores:
    """Imp scores of every FFN neuron, attention output and MLP output, per layer, at the last
    token of the first ``max_prompts`` prompts whose FFN activations the cache holds (the
    same rows for every variant captured with the same settings)."""
    model = unwrap_model(model)
    key = f"{prompt_set}.mlp_act.last"
    if key not in cache:
        raise KeyError(f"the cache has no {key}: capture with max_act_prompts > 0")
    act_all = cache[key]
    rows_all = cache[f"{prompt_set}.mlp_act.rows"]
    n = len(rows_all) if max_prompts is None else min(max_prompts, len(rows_all))
    rows = rows_all[:n]
    resid = cache.take(f"{prompt_set}.resid_post.last", rows)  # reads only these rows' shards
    if cache.metadata.get(f"{prompt_set}.components_rows", "all") == "act_rows":
        attn_out = cache[f"{prompt_set}.attn_out.last"][:n]  # stored by mlp_act slot
        mlp_out = cache[f"{prompt_set}.mlp_out.last"][:n]
    else:
        attn_out = cache.take(f"{prompt_set}.attn_out.last", rows)
        mlp_out = cache.take(f"{prompt_set}.mlp_out.last", rows)
    answer = cache[f"{prompt_set}.answer_token"][rows]
    layers = decoder_layers(model)
    n_layers, d_mlp = act_all.shape[1], act_all.shape[2]
    if n_layers != len(layers):
        raise ValueError(f"the cache has {n_layers} layers, the model {len(layers)}: not the same model")

    readout = _Readout(model, norm)
    vocab = int(model.config.vocab_size)
    chunk = max(1, max_logits // vocab)
    ffn = torch.zeros(n, n_layers, d_mlp)
    attn = torch.zeros(n, n_layers)
    mlp = torch.zeros(n, n_layers)
    down_dtype = readout.dtype

    bar = tqdm(total=n * n_layers, desc=f"attribute {prompt_set}", disable=not progress, mininterval=1.0)
    for p in range(n):
        w = int(answer[p])
        ref = readout.rms(resid[p, n_layers].float())[None] if norm == "final_scale" else None
        for layer in range(n_layers):
            h_pre = resid[p, layer].float()[None]
            a_vec = attn_out[p, layer].float()[None]
            h_mid = h_pre + a_vec
            base_pre = readout.logp(h_pre, w, ref)
            base_mid = readout.logp(h_mid, w, ref)
            attn[p, layer] = (readout.logp(h_pre + a_vec, w, ref) - base_pre).item()
            mlp[p, layer] = (readout.logp(h_mid + mlp_out[p, layer].float()[None], w, ref) - base_mid).item()

            _, _, down = block_modules(layers[layer])
            dev = module_device(down, readout.device)
            act = act_all[p, layer].to(dev, down_dtype)  # mlp_act slot p holds table row rows_all[p]
            contrib = torch.cat([neuron_contributions(down, act, s, min(s + 4096, d_mlp)).float() for s in range(0, d_mlp, 4096)])
            h_mid_dev = h_mid.to(contrib.device)
            if candidates is not None and candidates < d_mlp:
                estimate = _first_order(readout, h_mid_dev, w, ref, contrib)
                scores = estimate.clone()
                pick = torch.topk(estimate, candidates).indices
                for s in range(0, len(pick), chunk):
                    idx = pick[s : s + chunk]
                    scores[idx] = (readout.logp(h_mid_dev + contrib[idx], w, ref) - base_mid).float().cpu()
            else:
                scores = torch.empty(d_mlp)
                for s in range(0, d_mlp, chunk):
                    scores[s : s + chunk] = (readout.logp(h_mid_dev + contrib[s : s + chunk], w, ref) - base_mid).float().cpu()
            ffn[p, layer] = scores
            bar.update(1)
    bar.close()
    metadata = {
        "prompt_set": prompt_set,
        "norm": norm,
        "candidates": str(candidates),
        "model": cache.metadata.get("model", ""),
        "prompts_sha256": cache.metadata.get(f"{prompt_set}.prompts_sha256", ""),
    }
    return AttributionScores(rows=rows.clone(), answer_token=answer.clone(), ffn=ffn, attn=attn, mlp=mlp, metadata=metadata)


def _first_order(readout: _Readout, h: torch.Tensor, w: int, ref, contrib: torch.Tensor) -> torch.Tensor:
    """grad_h log p(w | h) . v for every neuron's v (rows of ``contrib``)."""
    with torch.enable_grad():
        x = h.detach().clone().float().requires_grad_(True)
        lp = readout.logp(x, w, ref).sum()
        (grad,) = torch.autograd.grad(lp, x)
    return (contrib.float() @ grad[0].float().to(contrib.device)).cpu()


def tau_threshold(reference: AttributionScores, top_k: int = 300) -> torch.Tensor:
    """Per prompt, the lowest score among the reference model's top-``k`` FFN neurons."""
    flat = reference.ffn.flatten(1)
    k = min(top_k, flat.shape[1])
    return torch.topk(flat, k, dim=1).values[:, -1]


def attribution_table(
    scores: Mapping[str, AttributionScores],
    reference: str = "fp",
    top_k: int = 300,
    settings: StatisticsSettings = StatisticsSettings(),
) -> pd.DataFrame:
    """Tidy per-layer comparison (variant, layer, metric, value), averaged over prompts:

    * ``neurons_above_tau``: FFN neurons scoring >= tau (tau from the reference, per prompt);
    * ``top_neurons_retained``: of the reference's top-k neurons, those still >= tau;
    * ``attn_imp`` / ``ffn_imp``: Imp of the layer's attention output / whole MLP output;
    * ``attn_drop`` / ``ffn_drop``: the reference's value minus the variant's.

    Every metric is a mean over the attributed prompts of a per-prompt value (tau is set per
    prompt), so the intervals are percentile bootstraps over those prompts (1 - alpha,
    ``ci_low``/``ci_high``, ``stderr``): they capture which prompts were attributed (another
    draw of ``max_prompts`` facts), not another choice of ``top_k``, another calibration draw
    or another model. The first four metrics of every non-reference variant also carry
    ``delta`` (variant minus reference on the same prompts), its paired bootstrap interval, the
    Wilcoxon signed-rank ``p_value`` (exact McNemar where every per-prompt value is 0 or 1) and
    ``p_holm`` (Holm over the variants within each layer and metric). The drops are already
    differences from the reference: their interval is the paired bootstrap interval of the
    per-prompt drop, and their test is the one on the ``*_imp`` row (the drop rows' comparison
    columns are NaN)."""
    if reference not in scores:
        raise KeyError(f"reference {reference!r} is not among the variants {sorted(scores)}")
    ref = scores[reference]
    tau = tau_threshold(ref, top_k)[:, None, None]
    ref_top = ref.ffn >= tau
    reference_values = _per_prompt(ref, tau, ref_top)
    rows = []
    for variant, s in scores.items():
        if not torch.equal(s.rows, ref.rows) or not torch.equal(s.answer_token, ref.answer_token):
            raise ValueError(f"variant {variant!r} was attributed on other prompts than {reference!r}")
        per_prompt = _per_prompt(s, tau, ref_top)
        metrics = {
            "neurons_above_tau": per_prompt["neurons_above_tau"].mean(0),
            "top_neurons_retained": per_prompt["top_neurons_retained"].mean(0),
            "attn_imp": s.attn.mean(0),
            "ffn_imp": s.mlp.mean(0),
            "attn_drop": ref.attn.mean(0) - s.attn.mean(0),
            "ffn_drop": ref.mlp.mean(0) - s.mlp.mean(0),
        }
        for metric, per_layer in metrics.items():
            for layer, value in enumerate(per_layer.tolist()):
                row = {"variant": variant, "layer": layer, "metric": metric, "value": float(value)}
                if metric in per_prompt:
                    values = per_prompt[metric][:, layer].numpy()
                    found = mean(values, settings)
                    row.update(ci_low=found.ci_low, ci_high=found.ci_high, stderr=found.stderr)
                    if variant != reference:
                        comparison = paired(reference_values[metric][:, layer].numpy(), values, settings)
                        row.update(delta=comparison.delta, delta_ci_low=comparison.delta_ci_low,
                                   delta_ci_high=comparison.delta_ci_high, p_value=comparison.p_value)
                else:  # a drop: reference minus variant, per prompt
                    source = {"attn_drop": (s.attn, ref.attn), "ffn_drop": (s.mlp, ref.mlp)}[metric]
                    mine, theirs = (t[:, layer].numpy() for t in source)
                    drop = paired(mine, theirs, settings)  # its delta: reference minus variant
                    row.update(ci_low=drop.delta_ci_low, ci_high=drop.delta_ci_high,
                               stderr=standard_error(theirs - mine))
                rows.append(row)
    table = pd.DataFrame(rows, columns=ATTRIBUTION_COLUMNS).astype({c: float for c in ATTRIBUTION_COLUMNS[4:]})
    return add_holm(table, by=["layer", "metric"])


def _per_prompt(scores: AttributionScores, tau: torch.Tensor, ref_top: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per prompt and layer ``[P, L]``: the values the first four metrics average over prompts."""
    above = scores.ffn >= tau
    return {
        "neurons_above_tau": above.float().sum(2),
        "top_neurons_retained": (above & ref_top).float().sum(2),
        "attn_imp": scores.attn,
        "ffn_imp": scores.mlp,
    }


__all__ = [
    "AttributionScores",
    "attribute",
    "attribution_table",
    "neuron_contributions",
    "tau_threshold",
]
