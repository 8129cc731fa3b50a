"""How far a variant's hidden states drift from the full-precision model's, per layer.

* cosine: mean over prompts of the cosine similarity between the two models' vectors for the
  same prompt, position and layer (1 = same direction);
* linear CKA (Kornblith et al. 2019) between the two ``[n_prompts, d]`` matrices of a layer:
  ``||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)`` with column-centred X, Y; 1 for
  identical (or isotropically scaled / rotated) representations, near 0 for independent ones
  (for independent random data it is about d / n, so use n >> d prompts).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .capture import ActivationCache, check_aligned


def cosine_by_layer(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> np.ndarray:
    """Mean cosine similarity per layer for ``[n, layers, d]`` tensors (computed in float64)."""
    a, b = a.double(), b.double()
    cos = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)).clamp(min=eps)
    return cos.mean(0).numpy()


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


def cka_by_layer(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Linear CKA per layer for ``[n, layers, d]`` tensors."""
    return np.array([linear_cka(a[:, layer], b[:, layer]) for layer in range(a.shape[1])])


def drift_table(
    caches: Mapping[str, ActivationCache],
    reference: str = "fp",
    sites: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Tidy (variant, site, layer, metric, value) with metric ``cosine`` and ``cka`` of each
    variant against the reference, for every ``resid_post`` site both caches hold (or the
    given ``sites``, e.g. ``"two_hop.resid_post.mention"``)."""
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
            if ref.is_sharded or cache.is_sharded:  # one layer at a time, read from disk
                cosine, cka = [], []
                for layer in range(shape_a[1]):
                    a, b = ref.layer(site, layer)[:, None], cache.layer(site, layer)[:, None]
                    cosine.append(cosine_by_layer(a, b)[0])
                    cka.append(cka_by_layer(a, b)[0])
            else:  # in memory: the whole site at once (bit for bit what it always computed)
                a, b = ref[site], cache[site]
                cosine, cka = cosine_by_layer(a, b), cka_by_layer(a, b)
            for metric, values in (("cosine", cosine), ("cka", cka)):
                rows += [(variant, site, layer, metric, float(v)) for layer, v in enumerate(values)]
    return pd.DataFrame(rows, columns=["variant", "site", "layer", "metric", "value"])
