"""The same variants quantized from models trained with different seeds: each seed's paired
comparisons side by side, their mean with an interval across seeds, whether each method
ranking holds in every seed, and how the variance of a variant's change splits into prompts,
calibration draws and training seeds.

Every input is a table the evaluate pipeline already wrote per trained model
(``recall_by_variant`` and ``variant_comparisons`` of each seed): the paired tests on the
same prompts stay the per-seed unit; across seeds the unit is the trained model, so the
interval of the mean change is Student's t over the seeds' changes (each seed's draws
averaged first), with seeds - 1 degrees of freedom.

Variance components (method of moments): the change of variant v against the reference in
seed s and calibration draw d is ``delta_sd = mu + a_s + b_sd + e_sd``, with ``a_s`` the
training seed's effect (variance ``seed``), ``b_sd`` the calibration draw's within a seed
(``calibration``) and ``e_sd`` the prompts' sampling noise of one measured change
(``prompts``: the mean squared paired standard error of the deltas). Every variant, draw and
seed is measured on the same prompts, so much of ``e_sd`` is shared: a prompt that fp gets
right and every 4-bit model gets wrong moves every delta alike and does not spread them.
What spreads them is the prompt-by-condition interaction, measured on each prompt
(``prompt_outcomes``): with ``x[p, k]`` the variant's outcome on prompt p minus the
reference's in condition k (a draw, or a seed's draws averaged), a two-way analysis without
replication over prompts x conditions gives

- ``var_k(mean_p x) = component + MS_interaction / P`` (P prompts),

so within a seed (conditions: its draws) ``calibration = var_draws - MS / P``, and across
seeds (conditions: the seeds, each the mean of its draws) ``seed + calibration / D =
var_seeds - MS / P``. A negative estimate is set to 0 (``*_truncated``): the spread is what
the prompts' interaction alone would give. Each of the two has a chi-square interval from the
degrees of freedom of its spread (seeds - 1; seeds x (draws - 1)), the interaction taken as
known (it has ~prompts x conditions degrees of freedom): with 3 seeds the seed component's
interval spans a factor of ~40, so the components are orders of magnitude, not estimates to
rank sources by unless the intervals separate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from .comparisons import HEADLINE_METRICS, pair_verdict
from .statistics import add_holm, verdict


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
    "variant_group", "method", "bits", "metric", "seeds", "draws", "delta_mean", "prompts", "calibration",
    "calibration_ci_low", "calibration_ci_high", "seed", "seed_ci_low", "seed_ci_high", "total", "share_prompts",
    "share_calibration", "share_seed", "calibration_truncated", "seed_truncated", "confidence",
]


def seed_deltas(recalls: Mapping[int, pd.DataFrame], metrics: tuple[str, ...] = HEADLINE_METRICS) -> pd.DataFrame:
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
                  metrics: tuple[str, ...] = HEADLINE_METRICS, alpha: float = 0.05) -> pd.DataFrame:
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


def variance_components(deltas: pd.DataFrame, outcomes: Mapping[int, pd.DataFrame], reference: str,
                        alpha: float = 0.05) -> pd.DataFrame:
    """Per variant and metric: the variance of its change against ``reference`` split into
    prompts, calibration draws and training seeds (the module's method of moments, on every
    seed's ``prompt_outcomes``), the calibration and seed components with their chi-square
    intervals at ``1 - alpha``. A component the design cannot separate is NaN: calibration
    with one draw a seed (methods that do not calibrate), seed with one seed."""
    rows = []
    for (group, metric), part in deltas.groupby(["variant_group", "metric"], sort=False):
        per_seed = {seed: _change_per_prompt(outcomes, seed, group, metric, reference)
                    for seed in sorted(part["training_seed"].unique())}
        draws = min(x.shape[1] for x in per_seed.values())
        seeds = len(per_seed)
        prompts = float(np.nanmean(part["delta_stderr"].to_numpy(dtype=float) ** 2))
        calibration = _Component.nan()
        if draws > 1:  # the draws' spread within each seed, pooled over the seeds
            within = [_Component.of(x) for x in per_seed.values()]
            calibration = _Component(float(np.mean([c.spread for c in within])), float(np.mean([c.interaction for c in within])),
                                     sum(c.df for c in within))
        seed = _Component.nan()
        if seeds > 1:  # each seed's mean over its draws carries calibration / draws too
            seed = _Component.of(np.column_stack([x.mean(axis=1) for x in per_seed.values()]))
            seed = seed.less(calibration.estimate / draws if draws > 1 else 0.0)
        cal_value, seed_value = calibration.estimate, seed.estimate
        (cal_low, cal_high), (seed_low, seed_high) = calibration.interval(alpha), seed.interval(alpha)
        total = float(np.nansum([prompts, max(cal_value, 0.0), max(seed_value, 0.0)]))
        share = (lambda v: max(v, 0.0) / total if total > 0 and not math.isnan(v) else math.nan)
        rows.append({
            "variant_group": group, "method": part["method"].iloc[0], "bits": part["bits"].iloc[0], "metric": metric,
            "seeds": seeds, "draws": draws, "delta_mean": float(part["delta"].mean()), "prompts": prompts,
            "calibration": max(cal_value, 0.0) if not math.isnan(cal_value) else math.nan,
            "calibration_ci_low": cal_low, "calibration_ci_high": cal_high,
            "seed": max(seed_value, 0.0) if not math.isnan(seed_value) else math.nan,
            "seed_ci_low": seed_low, "seed_ci_high": seed_high,
            "total": total, "share_prompts": share(prompts), "share_calibration": share(cal_value),
            "share_seed": share(seed_value), "calibration_truncated": bool(cal_value < 0),
            "seed_truncated": bool(seed_value < 0), "confidence": 1 - alpha,
        })
    return pd.DataFrame(rows, columns=COMPONENT_COLUMNS)


@dataclass(frozen=True)
class _Component:
    """A variance component estimated as ``spread - interaction - offset``: ``spread``, the
    variance of some conditions' mean changes with ``df`` degrees of freedom; ``interaction``,
    what the prompt-by-condition interaction alone puts in it; ``offset``, a smaller
    component it also holds (calibration inside the seeds' means)."""

    spread: float
    interaction: float
    df: int
    offset: float = 0.0

    @classmethod
    def nan(cls) -> "_Component":
        return cls(math.nan, math.nan, 0)

    @classmethod
    def of(cls, x: np.ndarray) -> "_Component":
        """Prompts x conditions, no replication (a two-way analysis of variance): the variance
        of the conditions' means (ddof 1) and the interaction's mean square over the prompts."""
        prompts, conditions = x.shape
        means = x.mean(axis=0)
        residual = x - x.mean(axis=1, keepdims=True) - means + x.mean()
        interaction = float((residual ** 2).sum()) / ((prompts - 1) * (conditions - 1))
        return cls(float(means.var(ddof=1)), interaction / prompts, conditions - 1)

    def less(self, offset: float) -> "_Component":
        return _Component(self.spread, self.interaction, self.df, self.offset + offset)

    @property
    def estimate(self) -> float:
        return self.spread - self.interaction - self.offset

    def interval(self, alpha: float) -> tuple[float, float]:
        """The chi-square interval of the spread's expectation (``df`` degrees of freedom),
        less the interaction and the offset taken as known, floored at 0; NaN without df.
        With 3 seeds (2 df) it spans a factor of ~40: the seed component is barely measured."""
        if self.df < 1 or math.isnan(self.spread):
            return math.nan, math.nan
        low = self.df * self.spread / stats.chi2.ppf(1 - alpha / 2, self.df)
        high = self.df * self.spread / stats.chi2.ppf(alpha / 2, self.df)
        shift = self.interaction + self.offset
        return max(low - shift, 0.0), max(high - shift, 0.0)


def _change_per_prompt(outcomes: Mapping[int, pd.DataFrame], seed: int, group: str, metric: str, reference: str
                       ) -> np.ndarray:
    """Prompts x calibration draws: the variant's outcome minus the reference's, per prompt,
    in training seed ``seed``."""
    table = outcomes[seed]
    table = table[table["metric"] == metric]
    variant = table[table["variant_group"] == group].pivot(index="item", columns="variant", values="value")
    base = table[table["variant"] == reference].set_index("item")["value"]
    if variant.empty or base.empty or not variant.index.equals(base.sort_index().index):
        raise ValueError(
            f"prompt_outcomes of training seed {seed} lacks {metric} of {group!r} or of the reference {reference!r} "
            f"on the same prompts: rerun the seed's evaluate pipeline (`kedro run --pipeline=evaluate` with the "
            f"study's --env, `--namespaces=seed{seed}...` for a further seed) so every variant is scored on the "
            f"current prompts"
        )
    return variant.sort_index().to_numpy(dtype=float) - base.sort_index().to_numpy(dtype=float)[:, None]
