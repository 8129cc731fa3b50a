"""How far a variant's hidden states drift from the full-precision model's, per layer.

* cosine: mean over prompts of the cosine similarity between the two models' vectors for the
  same prompt, position and layer (1 = same direction);
* linear CKA (Kornblith et al. 2019) between the two ``[n_prompts, d]`` matrices of a layer:
  ``||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)`` with column-centred X, Y; 1 for
  identical (or isotropically scaled / rotated) representations, near 0 for independent ones
  (for independent random data it is about d / n, so use n >> d prompts).

Intervals (``ci_low``, ``ci_high``, ``stderr``; 1 - alpha, :mod:`fkr_kedro.analysis.statistics`)
capture the sampling of prompts, not another calibration draw or model:

* cosine: percentile bootstrap of the mean over prompts of the per-prompt cosine;
* CKA: bootstrap over prompts, each resample drawing rows of BOTH matrices together (the
  same prompts on both sides). A resample repeats prompts, and CKA rises as the number of
  distinct prompts falls (for independent data it is about d / n), so the resamples sit above
  the value: the interval is the percentile interval of their deviations from their mean,
  placed around the value (``centred`` in :func:`~fkr_kedro.analysis.statistics.bootstrap_estimate`).
  It gives the spread over prompt samples; it does not correct CKA's own small-sample upward
  bias. To stay cheap it uses at most :data:`CKA_RESAMPLES` resamples and, above
  :data:`CKA_MAX_ROWS` prompts, a seeded subset of that many prompts whose spread is scaled
  by sqrt(subset / n) (CKA is a smooth function of second moments: its spread shrinks as
  1/sqrt(n)); clipped to [0, 1]. Each resample's CKA comes from the subset's Gram matrices
  weighted by how often each prompt was drawn (no ``d x d`` product is recomputed).

Where the value is NaN the interval is NaN too, and the table's ``reason`` column says why
(empty where the value is a number): CKA is undefined when every prompt has the same vector at
a layer (nothing to centre: 0 / 0). That happens at layer 0 (the token embeddings, before any
layer mixes in the context) of a position that holds the same token in every prompt, such as
the last token of every two-hop prompt; the cosine there is still defined.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .capture import ActivationCache, check_aligned
from .statistics import Estimate, StatisticsSettings, bootstrap_estimate, mean

# The cap on the CKA bootstrap (see the module docstring): resamples, and prompts.
CKA_RESAMPLES = 200
CKA_MAX_ROWS = 1000


def cosine_per_prompt(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity per prompt and layer ``[n, layers]`` for ``[n, layers, d]`` tensors
    (float64)."""
    a, b = a.double(), b.double()
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp(min=eps)


def cosine_by_layer(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> np.ndarray:
    """Mean cosine similarity per layer for ``[n, layers, d]`` tensors (computed in float64)."""
    return cosine_per_prompt(a, b, eps).mean(0).numpy()


def linear_cka(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    """Linear CKA between ``x [n, d1]`` and ``y [n, d2]`` (float64; feature-space form when
    n > d, Gram form otherwise)."""
    x = torch.as_tensor(x).double()
    y = torch.as_tensor(y).double()
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same rows: {x.shape[0]} vs {y.shape[0]}")
    x = x - x.mean(0, keepdim=True)
    y = y - y.mean(0, keepdim=True)
    n = x.shape[0]
    if n > max(x.shape[1], y.shape[1]):
        num = (y.T @ x).pow(2).sum()
        den = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    else:
        kx, ky = x @ x.T, y @ y.T
        num = (kx * ky).sum()
        den = torch.linalg.matrix_norm(kx) * torch.linalg.matrix_norm(ky)
    return float(num / den) if den > 0 else float("nan")


def _weighted_cka(x: np.ndarray, y: np.ndarray):
    """``statistic(idx, axis=-1)``: linear CKA of the rows ``idx`` of ``x`` and ``y`` (one
    resample per row of a 2-D ``idx``), from Gram matrices and each prompt's draw count ``w``:
    with centred rows, HSIC_w(x, y) = w'(Kx o Ky)w - 2/m sum_i w_i (Kx w)_i (Ky w)_i
    + (w'Kx w)(w'Ky w)/m^2 is ||X_c' Y_c||_F^2 of the resampled rows."""
    x = x - x.mean(0)
    y = y - y.mean(0)  # CKA ignores a shift of every row: centring first keeps the sums small
    kx, ky = x @ x.T, y @ y.T
    products = {"xy": kx * ky, "xx": kx * kx, "yy": ky * ky}
    m = len(x)

    def statistic(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        idx = np.asarray(idx)
        batch = idx.reshape(-1, idx.shape[-1])
        offsets = (np.arange(len(batch)) * m)[:, None]
        w = np.bincount((batch + offsets).ravel(), minlength=len(batch) * m).reshape(len(batch), m).astype(float)
        n = w.sum(1)
        px, py = w @ kx, w @ ky
        sx, sy = (px * w).sum(1), (py * w).sum(1)

        def hsic(product, p1, p2, s1, s2):
            return ((w @ product) * w).sum(1) - 2 / n * (w * p1 * p2).sum(1) + s1 * s2 / n**2

        xy = hsic(products["xy"], px, py, sx, sy)
        xx = hsic(products["xx"], px, px, sx, sx)
        yy = hsic(products["yy"], py, py, sy, sy)
        with np.errstate(invalid="ignore", divide="ignore"):
            cka = xy / np.sqrt(xx * yy)
        return cka.reshape(idx.shape[:-1])

    return statistic


def cka_estimate(
    x: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    settings: StatisticsSettings = StatisticsSettings(),
    value: float | None = None,
    max_rows: int = CKA_MAX_ROWS,
) -> Estimate:
    """Linear CKA of ``x [n, d1]`` and ``y [n, d2]`` (``value``, or :func:`linear_cka`) with a
    bootstrap interval over prompts (rows drawn together), capped as the module docstring says."""
    x = torch.as_tensor(x).double().numpy()
    y = torch.as_tensor(y).double().numpy()
    n = len(x)
    value = linear_cka(x, y) if value is None else value
    if n < 2 or np.isnan(value):
        return Estimate(value, np.nan, np.nan, np.nan, n)
    rows = np.arange(n)
    if n > max_rows:
        rows = np.sort(np.random.default_rng(settings.bootstrap_seed).choice(n, max_rows, replace=False))
    capped = settings.model_copy(update={"bootstrap_resamples": min(settings.bootstrap_resamples, CKA_RESAMPLES)})
    found = bootstrap_estimate((np.arange(len(rows)),), _weighted_cka(x[rows], y[rows]), capped, centred=True)
    if np.isnan(found.ci_low) or np.isnan(found.value):
        return Estimate(value, np.nan, np.nan, np.nan, n)
    scale = np.sqrt(len(rows) / n)  # 1 without a subset: the interval around the subset's value, moved to the full one
    low, high = value + scale * (found.ci_low - found.value), value + scale * (found.ci_high - found.value)
    return Estimate(value, float(np.clip(low, 0, 1)), float(np.clip(high, 0, 1)), float(scale * found.stderr), n)


def cka_by_layer(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Linear CKA per layer for ``[n, layers, d]`` tensors."""
    return np.array([linear_cka(a[:, layer], b[:, layer]) for layer in range(a.shape[1])])


def undefined_cka_reason(x: torch.Tensor, y: torch.Tensor) -> str:
    """Why linear CKA of ``x`` and ``y`` is NaN ('' when it is not undefined for a known reason)."""
    constant = [
        side for side, m in (("reference", x), ("variant", y))
        if not bool((torch.as_tensor(m).double() - torch.as_tensor(m).double().mean(0)).abs().max() > 0)
    ]
    if not constant:
        return ""
    return (
        f"every prompt has the same vector here ({' and '.join(constant)}; e.g. the embedding of the same token "
        f"at layer 0): CKA is 0/0"
    )


def _interval(found: Estimate) -> tuple[float, float, float]:
    return found.ci_low, found.ci_high, found.stderr


def _per_layer(ref: ActivationCache, cache: ActivationCache, site: str):
    """Per layer of ``site``: the mean cosine, the per-prompt cosines and both ``[n, d]``
    matrices (of a sharded cache one layer at a time, read from disk; in memory the whole site
    at once, bit for bit what the table always held)."""
    if ref.is_sharded or cache.is_sharded:
        for layer in range(ref.shape(site)[1]):
            a, b = ref.layer(site, layer), cache.layer(site, layer)
            cosine = cosine_per_prompt(a[:, None], b[:, None])[:, 0]
            yield float(cosine.mean()), cosine, a, b
        return
    a, b = ref[site], cache[site]
    cosines = cosine_per_prompt(a, b)
    for layer, value in enumerate(cosines.mean(0).tolist()):
        yield value, cosines[:, layer], a[:, layer], b[:, layer]


def drift_table(
    caches: Mapping[str, ActivationCache],
    reference: str = "fp",
    sites: Sequence[str] | None = None,
    settings: StatisticsSettings = StatisticsSettings(),
) -> pd.DataFrame:
    """Tidy (variant, site, layer, metric, value, ci_low, ci_high, stderr, reason) with metric
    ``cosine`` and ``cka`` of each variant against the reference, for every ``resid_post``
    site both caches hold (or the given ``sites``, e.g. ``"two_hop.resid_post.mention"``);
    the intervals as the module docstring says."""
    if reference not in caches:
        raise KeyError(f"reference {reference!r} is not among the variants {sorted(caches)}")
    ref = caches[reference]
    if sites is None:
        sites = [k for k in ref.keys() if ".resid_post." in k]
    rows = []
    for variant, cache in caches.items():
        for site in sites:
            check_aligned(ref, cache, site.split(".")[0])
            shape_a, shape_b = ref.shape(site), cache.shape(site)
            if shape_a != shape_b:
                raise ValueError(f"{site}: shapes differ ({shape_a} vs {shape_b})")
            cosine_rows, cka_rows = [], []  # every layer's cosine, then every layer's CKA
            for layer, (value, cosine, a, b) in enumerate(_per_layer(ref, cache, site)):
                found = mean(cosine.numpy(), settings)
                cosine_rows.append((variant, site, layer, "cosine", float(value), *_interval(found), ""))
                found = cka_estimate(a, b, settings)
                reason = undefined_cka_reason(a, b) if np.isnan(found.value) else ""
                if np.isnan(found.value) and not reason:
                    reason = "CKA is 0/0 (no variance across prompts at this layer)"
                cka_rows.append((variant, site, layer, "cka", found.value, *_interval(found), reason))
            rows += cosine_rows + cka_rows
    columns = ["variant", "site", "layer", "metric", "value", "ci_low", "ci_high", "stderr", "reason"]
    return pd.DataFrame(rows, columns=columns)
