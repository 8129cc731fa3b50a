"""The same variants quantized from models trained with different seeds: each seed's paired
comparisons side by side, their mean with an interval across seeds, whether each method
ranking holds in every seed, and how the variance of a variant's change splits into prompts,
calibration draws and training seeds.

Every input is a table the evaluate pipeline already wrote per trained model
(``recall_by_variant`` and ``variant_comparisons`` of each seed): the paired tests on the
same prompts stay the per-seed unit; across seeds the unit is the trained model, so the
interval of the mean change is Student's t over the seeds' changes (each seed's draws
averaged first), with seeds - 1 degrees of freedom.

Variance components (method of moments, balanced nested design): the change of variant v
against the reference in seed s and calibration draw d is
``delta_sd = mu + a_s + b_sd + e_sd``, with ``a_s`` the training seed's effect (variance
``seed``), ``b_sd`` the calibration draw's within a seed (``calibration``) and ``e_sd`` the
prompts' sampling noise of one measured change (``prompts``: the mean squared standard error
of the deltas over prompts). With S seeds and D draws a seed:

- within a seed, the draws' variance estimates ``calibration + prompts``;
- the variance of the seeds' means estimates ``seed + (calibration + prompts) / D``;

so ``calibration = within - prompts`` and ``seed = between - within / D``, each set to 0
when negative (``*_truncated``). Every variant is measured on the same prompts, so the
prompt terms of two deltas are correlated rather than independent; the estimates treat
them as independent, which makes ``prompts`` an upper bound on the prompt noise inside the
spread and the other two components conservative (docs/statistics.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from .comparisons import pair_verdict
from .statistics import add_holm, verdict

# The headline changes compared across seeds: one-hop recall and latent composition.
SEED_METRICS = ("one_hop.accuracy", "two_hop.held_out.accuracy")

DELTA_COLUMNS = [
    "training_seed", "variant", "variant_group", "method", "bits", "calibration_seed", "metric", "value",
    "ci_low", "ci_high", "delta", "delta_ci_low", "delta_ci_high", "delta_stderr", "p_holm", "change",
]
SUMMARY_COLUMNS = [
    "variant_group", "method", "bits", "metric", "seeds", "draws", "value_mean", "value_sd_across_seeds",
    "delta_mean", "delta_ci_low", "delta_ci_high", "p_value", "p_holm", "change", "delta_sd_across_seeds",
    "per_seed_delta", "seeds_with_loss", "seeds_with_gain", "loss_in_every_seed", "confidence",
]
RANKING_COLUMNS = [
    "bits", "variant_a", "variant_b", "metric", "seeds", "per_seed_delta", "delta_mean", "delta_ci_low",
    "delta_ci_high", "p_value", "p_holm", "change", "same_sign_in_every_seed", "seeds_b_above_a", "seeds_a_above_b",
    "holds_in_every_seed",
]
COMPONENT_COLUMNS = [
    "variant_group", "method", "bits", "metric", "seeds", "draws", "delta_mean", "prompts", "calibration", "seed",
    "total", "share_prompts", "share_calibration", "share_seed", "calibration_truncated", "seed_truncated",
]


def seed_deltas(recalls: Mapping[int, pd.DataFrame], metrics: tuple[str, ...] = SEED_METRICS) -> pd.DataFrame:
    """One row per training seed, variant and headline metric: the value and the paired
    comparison with the reference as that seed's ``recall_by_variant`` holds it (the
    reference's own rows, which compare nothing, are left out)."""
    parts = []
    for seed, recall in recalls.items():
        rows = recall[recall["metric"].isin(metrics) & recall["relation"].isna() & recall["delta"].notna()].copy()
        if "variant_group" not in rows:
            rows["variant_group"] = rows["variant"]
        rows["training_seed"] = seed
        parts.append(rows.reindex(columns=DELTA_COLUMNS))
    if not parts:
        return pd.DataFrame(columns=DELTA_COLUMNS)
    table = pd.concat(parts, ignore_index=True)
    table["calibration_seed"] = table["calibration_seed"].astype("Int64")
    return table


def _t_interval(values: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """Student's t interval of the mean and the one-sample t-test's p-value (mean 0); NaN
    below two values. When every value is the same (e.g. the same two prompts lost in each
    seed) the spread between seeds is unmeasured, not zero: the interval is that value and
    the test is not made (p NaN, so never a finding)."""
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return math.nan, math.nan, math.nan
    if np.all(values == values[0]):
        return float(values[0]), float(values[0]), math.nan
    result = stats.ttest_1samp(values, 0.0)
    interval = result.confidence_interval(confidence_level=1 - alpha)
    return float(interval.low), float(interval.high), float(result.pvalue)


def _seed_means(part: pd.DataFrame, column: str) -> pd.Series:
    """The mean of ``column`` over each seed's calibration draws (one value per trained model)."""
    return part.groupby("training_seed", sort=True)[column].mean()


def _across_seeds(part: pd.DataFrame, alpha: float) -> tuple[pd.Series, pd.Series, dict]:
    """What the summary and the rankings share for one row: each seed's mean ``delta``, each
    seed's verdict (the draws' common ``change``, else ``mixed``) and the columns of the mean
    across seeds (t interval, p, the per-seed text)."""
    seed_delta = _seed_means(part, "delta")
    verdicts = part.groupby("training_seed")["change"].agg(lambda c: c.iloc[0] if c.nunique() == 1 else "mixed")
    low, high, p = _t_interval(seed_delta.to_numpy(dtype=float), alpha)
    columns = {
        "seeds": len(seed_delta), "delta_mean": float(seed_delta.mean()), "delta_ci_low": low, "delta_ci_high": high,
        "p_value": p, "per_seed_delta": "; ".join(f"{seed}: {100 * d:+.1f}" for seed, d in seed_delta.items()),
    }
    return seed_delta, verdicts, columns


def seed_summary(deltas: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Per variant (its calibration draws together) and metric, across training seeds: the
    mean value and its SD across seeds, the mean change against the reference with its t
    interval and one-sample t-test across seeds, each seed's change, and in how many seeds
    every draw's paired test (Holm-adjusted within that seed) found a loss or a gain.
    ``p_holm``: the t-tests Holm-adjusted across the variants of a metric; ``change``: loss,
    gain or noise across seeds at ``alpha``."""
    rows = []
    for (group, metric), part in deltas.groupby(["variant_group", "metric"], sort=False):
        seed_delta, verdicts, across = _across_seeds(part, alpha)
        seed_value = _seed_means(part, "value")
        n_seeds = len(seed_delta)
        rows.append({
            "variant_group": group, "method": part["method"].iloc[0], "bits": part["bits"].iloc[0], "metric": metric,
            **across, "draws": int(part.groupby("training_seed").size().max()),
            "value_mean": float(seed_value.mean()),
            "value_sd_across_seeds": float(seed_value.std(ddof=1)) if n_seeds > 1 else math.nan,
            "delta_sd_across_seeds": float(seed_delta.std(ddof=1)) if n_seeds > 1 else math.nan,
            "seeds_with_loss": int((verdicts == "loss").sum()), "seeds_with_gain": int((verdicts == "gain").sum()),
            "loss_in_every_seed": bool((verdicts == "loss").all()), "confidence": 1 - alpha,
        })
    table = pd.DataFrame(rows, columns=[c for c in SUMMARY_COLUMNS if c not in ("p_holm", "change")])
    table = add_holm(table, by=["metric"])
    table["change"] = [
        verdict(pd.Series({"delta": row.delta_mean}), row.p_holm, alpha) for row in table.itertuples()
    ]
    return table[SUMMARY_COLUMNS]


def seed_rankings(comparisons: Mapping[int, pd.DataFrame], groups: Mapping[str, str],
                  metrics: tuple[str, ...] = SEED_METRICS, alpha: float = 0.05) -> pd.DataFrame:
    """Per pair of methods with the same bit width (their calibration draws together) and
    metric: each seed's change ``b - a`` (the mean over the pair's draw combinations), the mean
    with its t interval across seeds, whether the sign is the same in every seed, and in how
    many seeds every draw combination's paired test (Holm-adjusted within the seed) ranked
    ``b`` above ``a`` or below. ``holds_in_every_seed``: one side ranked above in every seed.
    ``p_holm``: the t-tests across seeds Holm-adjusted across the pairs of a metric;
    ``change``: ``b > a``, ``a > b`` or ``noise`` across seeds at ``alpha``.
    ``groups``: each variant's ``variant_group`` (its name without the draw's suffix)."""
    parts = []
    for seed, table in comparisons.items():
        rows = table[table["metric"].isin(metrics) & table["relation"].isna()].copy()
        rows["training_seed"] = seed
        parts.append(rows)
    if not parts or all(p.empty for p in parts):
        return pd.DataFrame(columns=RANKING_COLUMNS)
    table = pd.concat(parts, ignore_index=True)
    table["group_a"] = table["variant_a"].map(lambda name: groups.get(name, name))
    table["group_b"] = table["variant_b"].map(lambda name: groups.get(name, name))
    rows = []
    for (bits, a, b, metric), part in table.groupby(["bits", "group_a", "group_b", "metric"], sort=False):
        seed_delta, verdicts, across = _across_seeds(part, alpha)
        signs = np.sign(seed_delta.to_numpy())
        above, below = int((verdicts == "b > a").sum()), int((verdicts == "a > b").sum())
        rows.append({
            "bits": bits, "variant_a": a, "variant_b": b, "metric": metric, **across,
            "same_sign_in_every_seed": bool(len(signs) > 0 and signs[0] != 0 and np.all(signs == signs[0])),
            "seeds_b_above_a": above, "seeds_a_above_b": below,
            "holds_in_every_seed": bool(above == len(seed_delta) or below == len(seed_delta)),
        })
    table = add_holm(pd.DataFrame(rows, columns=[c for c in RANKING_COLUMNS if c not in ("p_holm", "change")]),
                     by=["metric"])
    table["change"] = [
        pair_verdict(pd.Series({"delta": row.delta_mean, "p_holm": row.p_holm}), alpha) for row in table.itertuples()
    ]
    return table[RANKING_COLUMNS]


def variance_components(deltas: pd.DataFrame) -> pd.DataFrame:
    """Per variant and metric: the variance of its change against the reference split into
    prompts, calibration draws and training seeds (the module's method of moments). A
    component the design cannot separate is NaN: calibration with one draw a seed (methods
    that do not calibrate: their draws' spread is in ``prompts``), seed with one seed."""
    rows = []
    for (group, metric), part in deltas.groupby(["variant_group", "metric"], sort=False):
        per_seed = part.groupby("training_seed")["delta"]
        draws = int(per_seed.size().min())
        seeds = per_seed.ngroups
        prompts = float(np.nanmean(part["delta_stderr"].to_numpy(dtype=float) ** 2))
        within = float(per_seed.var(ddof=1).mean()) if draws > 1 else math.nan
        calibration = within - prompts if draws > 1 else math.nan
        # With one draw a seed, a seed's delta varies by the seed's effect plus its prompt noise.
        noise = within if draws > 1 else prompts
        between = float(per_seed.mean().var(ddof=1)) if seeds > 1 else math.nan
        seed = between - noise / max(draws, 1) if seeds > 1 else math.nan
        cal_cut, seed_cut = bool(calibration < 0), bool(seed < 0)
        calibration = max(calibration, 0.0) if not math.isnan(calibration) else math.nan
        seed = max(seed, 0.0) if not math.isnan(seed) else math.nan
        total = float(np.nansum([prompts, calibration, seed]))
        share = (lambda v: v / total if total > 0 and not math.isnan(v) else math.nan)
        rows.append({
            "variant_group": group, "method": part["method"].iloc[0], "bits": part["bits"].iloc[0], "metric": metric,
            "seeds": seeds, "draws": draws, "delta_mean": float(part["delta"].mean()), "prompts": prompts,
            "calibration": calibration, "seed": seed, "total": total, "share_prompts": share(prompts),
            "share_calibration": share(calibration), "share_seed": share(seed),
            "calibration_truncated": cal_cut, "seed_truncated": seed_cut,
        })
    return pd.DataFrame(rows, columns=COMPONENT_COLUMNS)
