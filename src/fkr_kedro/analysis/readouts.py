"""Readouts of captured activations: EntRec (is the bridge entity recalled inside the
descriptive mention?) and CnstScore (does the two-hop prompt predict like its one-hop prompt?).

* EntRec^l(e2) = log softmax(FinalNorm(x_l) W_U)[first token of e2], ``x_l`` the residual
  stream after layer ``l`` (``resid_post``; layer 0 = embeddings) at the last token of the
  descriptive mention. The model's own final norm (``model.model.norm``) and ``lm_head``
  modules are CALLED on the captured residuals, so a quantized variant is read out through
  its own (possibly quantized) head, never by reading its weights. The first token of e2 is
  the one the tokenizer produces for ``prompt_two_hop + " " + e2`` (stored by capture as
  ``two_hop.bridge_token``; see :func:`fkr_kedro.analysis.capture.answer_first_token_ids`).
* CnstScore = -0.5 H(p_2H, p_1H) - 0.5 H(p_1H, p_2H), H(p, q) = -sum_w p(w) log q(w) the
  cross-entropy between the next-token distributions of the two-hop prompt (p_2H) and of the
  matching one-hop prompt (p_1H), per chain. It is at most 0 and equals minus the entropy
  when both distributions are the same. Computed during capture (see ``capture.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from ..modeling.structure import compute_dtype, final_norm, unwrap_model

if TYPE_CHECKING:  # for annotations only: capture imports this module
    from .capture import ActivationCache


# ----------------------------------------------------------------------------------------
# CnstScore
# ----------------------------------------------------------------------------------------


def cross_entropy(logp_p: torch.Tensor, logp_q: torch.Tensor) -> torch.Tensor:
    """H(p, q) = -sum p log q over the last axis, from log-probabilities (float32); terms with
    p = 0 count 0 even where q = 0."""
    logp_p, logp_q = logp_p.float(), logp_q.float()
    p = logp_p.exp()
    terms = torch.where(p > 0, p * logp_q, torch.zeros_like(p))
    return -terms.sum(-1)


def cnst_components(logp_2h: torch.Tensor, logp_1h: torch.Tensor) -> dict[str, torch.Tensor]:
    """CnstScore and its terms for rows of next-token log-probabilities ``[..., vocab]``."""
    x21 = cross_entropy(logp_2h, logp_1h)
    x12 = cross_entropy(logp_1h, logp_2h)
    return {
        "xent_2h_1h": x21,
        "xent_1h_2h": x12,
        "entropy_2h": cross_entropy(logp_2h, logp_2h),
        "entropy_1h": cross_entropy(logp_1h, logp_1h),
        "cnst_score": -0.5 * x21 - 0.5 * x12,
    }


def cnst_score(logp_2h: torch.Tensor, logp_1h: torch.Tensor) -> torch.Tensor:
    """-0.5 H(p_2H, p_1H) - 0.5 H(p_1H, p_2H) per row."""
    return cnst_components(logp_2h, logp_1h)["cnst_score"]


def cnst_table(cache: ActivationCache, two_hop: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per chain: CnstScore and its terms as captured (plus the chain's columns when the
    two-hop table is given; rows line up with the table the cache was captured from)."""
    keys = ["cnst_score", "xent_2h_1h", "xent_1h_2h", "entropy_2h", "entropy_1h"]
    frame = pd.DataFrame({k: cache[f"two_hop.{k}"].numpy() for k in keys})
    if two_hop is not None:
        cols = [c for c in ("composition", "e1", "e2", "e3", "split") if c in two_hop.columns]
        if len(two_hop) != len(frame):
            raise ValueError(f"two-hop table has {len(two_hop)} rows, the cache {len(frame)}")
        frame = pd.concat([two_hop[cols].reset_index(drop=True), frame], axis=1)
    return frame


# ----------------------------------------------------------------------------------------
# Logit lens through the model's own final norm and head
# ----------------------------------------------------------------------------------------


def unembed_logprobs(model, hidden: torch.Tensor, normed: bool = False) -> torch.Tensor:
    """float32 log softmax(lm_head(FinalNorm(hidden))) over the vocabulary, for ``[..., d]``.
    With ``normed=True`` the final norm is skipped (``hidden`` is already normed)."""
    model = unwrap_model(model)
    norm, head = final_norm(model), model.get_output_embeddings()
    dtype = compute_dtype(norm, getattr(model, "dtype", torch.float32))
    device = next(iter(head.parameters()), hidden).device
    x = hidden.to(device=device, dtype=dtype)
    if not normed:
        x = norm(x)
    return torch.log_softmax(head(x).float(), dim=-1)


@torch.inference_mode()
def logit_lens_token_logprobs(
    model, hidden: torch.Tensor, token_ids: torch.Tensor, max_logits: int = 2**24
) -> torch.Tensor:
    """log p(token | hidden) through FinalNorm and lm_head for rows ``hidden [n, d]``,
    ``token_ids [n]``; chunked so at most ``max_logits`` logits exist at once."""
    vocab = int(getattr(getattr(model, "config", None), "vocab_size", 0) or 1)
    chunk = max(1, max_logits // vocab)
    out = torch.empty(len(hidden))
    for i in range(0, len(hidden), chunk):
        lp = unembed_logprobs(model, hidden[i : i + chunk])
        t = token_ids[i : i + chunk].to(lp.device)
        out[i : i + chunk] = lp.gather(1, t[:, None])[:, 0].cpu()
    return out


def entrec(
    model,
    cache: ActivationCache,
    prompt_set: str = "two_hop",
    position: str = "mention",
    token_key: str = "bridge_token",
    layers: list[int] | None = None,
    max_logits: int = 2**24,
) -> np.ndarray:
    """EntRec per prompt and layer: ``[n_prompts, n_layers + 1]`` (layer 0 = embeddings; a
    layer not asked for is NaN). ``model`` must be the model the cache was captured from."""
    key = f"{prompt_set}.resid_post.{position}"
    tokens = cache[f"{prompt_set}.{token_key}"]
    n, n_layers1, _ = cache.shape(key)
    out = np.full((n, n_layers1), np.nan)
    for layer in layers if layers is not None else range(n_layers1):  # a layer at a time
        out[:, layer] = logit_lens_token_logprobs(model, cache.layer(key, layer), tokens, max_logits).numpy()
    return out


def entrec_table(matrix: np.ndarray, two_hop: pd.DataFrame | None = None) -> pd.DataFrame:
    """Tidy EntRec: one row per (chain, layer) with the chain's composition and split."""
    n, n_layers1 = matrix.shape
    frame = pd.DataFrame(
        {"row": np.repeat(np.arange(n), n_layers1), "layer": np.tile(np.arange(n_layers1), n), "entrec": matrix.ravel()}
    )
    if two_hop is not None:
        cols = [c for c in ("composition", "e1", "e2", "split") if c in two_hop.columns]
        frame = frame.join(two_hop[cols].reset_index(drop=True), on="row")
    return frame
