"""The recall table of every variant with intervals, and paired comparisons between variants.

``recall_by_variant`` holds one row per variant and metric: the value, its 95% interval
(Wilson for correctness, percentile bootstrap for log-probabilities, over prompts) and the
paired comparison with the reference variant on the same prompts (difference with a paired
bootstrap interval, exact McNemar or Wilcoxon p-value (``test`` names which), Holm-adjusted across the study's
variants per metric, and ``change``: ``loss``, ``gain`` or ``noise`` at the level ``alpha``);
a variant quantized in several calibration draws also carries the test of whether its draws
differ on the same prompts (``draws_p_value``, ``draws_p_holm``: Cochran's Q).

``prompt_outcomes`` holds every variant's verdict on every prompt of the headline metrics
(which facts each variant still recalls, which chains it still composes), the same prompts
in every variant and every training seed of a study.

``variant_comparisons`` holds the same paired comparison for every pair of variants with the
same bit width, Holm-adjusted across all pairs per metric, so "method A keeps more than
method B at 4 bits" has its own test.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..quantization.variants import VariantSpec
from .statistics import (
    NAN_COMPARISON, NAN_ESTIMATE, StatisticsSettings, add_holm, estimate, is_binary, paired, verdict,
)

# The headline metrics: one-hop recall and latent (held-out) composition.
HEADLINE_METRICS = ("one_hop.accuracy", "two_hop.held_out.accuracy")
OUTCOME_COLUMNS = ["variant", "variant_group", "calibration_seed", "metric", "item", "value"]
# Metrics that also come per relation, as ``<metric>.<relation>``.
PER_RELATION = ("one_hop.accuracy", "stored_bits")
# variant_group: the variant's name without its calibration draw's suffix (``gptq_w4_g32`` for
# ``gptq_w4_g32_draw1``); calibration_seed: the draw's seed (empty for methods that do not calibrate).
SPEC_COLUMNS = ("method", "bits", "group_size", "calibration_size", "calibration_seed", "variant_group")
INTERVAL_COLUMNS = ("n", "stderr", "ci_low", "ci_high")
COMPARISON_COLUMNS = ("delta", "delta_ci_low", "delta_ci_high", "delta_stderr", "p_value", "test", "p_holm", "gained", "lost", "change")


class PromptMismatchError(ValueError):
    """Two variants' score tables do not hold the same prompts, so they cannot be paired."""


def split_metric(key: str) -> tuple[str, str | None]:
    """``one_hop.accuracy.birth_city`` -> (``one_hop.accuracy``, ``birth_city``)."""
    prefix = next((p for p in PER_RELATION if key.startswith(f"{p}.")), None)
    return (prefix, key.removeprefix(f"{prefix}.")) if prefix else (key, None)


def check_same_prompts(tables: Mapping[str, pd.DataFrame], keys: Sequence[str], what: str) -> None:
    """Every variant's score table lists the same prompts in the same order as the first's."""
    items = list(tables.items())
    if not items:
        return
    first_name, first = items[0]
    columns = [c for c in keys if c in first]
    for name, table in items[1:]:
        if len(table) != len(first) or not table[columns].reset_index(drop=True).equals(first[columns].reset_index(drop=True)):
            raise PromptMismatchError(
                f"{name}'s {what} table ({len(table)} rows) does not hold the prompts of {first_name}'s ({len(first)} rows): "
                f"the variants were evaluated on different prompt tables. Rerun `kedro run --pipeline=evaluate` "
                f"(with the study's --env) so every variant is scored on the current prompts."
            )


def recall_table(
    specs: Sequence[VariantSpec],
    metrics: Mapping[str, dict],
    footprints: Mapping[str, dict],
    values: Mapping[str, Mapping[str, pd.Series]],
    reference: str,
    settings: StatisticsSettings = StatisticsSettings(),
) -> pd.DataFrame:
    """One tidy table: a row per variant and metric (relation-level metrics keep their
    relation in its own column), with the variant's spec, the value, its interval over
    prompts (where the metric averages prompts: ``values``, from
    :func:`fkr_kedro.analysis.recall.prompt_values`) and the paired comparison with
    ``reference`` (NaN for the reference itself, for metrics that average no prompts, and
    when the study has no ``reference``)."""
    rows = []
    for spec in specs:
        per_prompt = values.get(spec.name, {})
        for key, value in {**metrics[spec.name], **footprints[spec.name]}.items():
            if key.endswith("_stderr"):  # a column of the metric's own row
                continue
            metric, relation = split_metric(key)
            row = {"variant": spec.name, **{c: getattr(spec, c) for c in SPEC_COLUMNS}, "metric": metric,
                   "relation": relation, "value": float(value)}
            interval = estimate(per_prompt[key].to_numpy(), settings) if key in per_prompt else NAN_ESTIMATE
            row.update({c: getattr(interval, c) for c in INTERVAL_COLUMNS})
            comparison = NAN_COMPARISON
            if spec.name != reference and key in per_prompt and key in values.get(reference, {}):
                comparison = _paired(values[reference][key], per_prompt[key], settings)
            row.update({c: getattr(comparison, c) for c in COMPARISON_COLUMNS if hasattr(comparison, c)})
            rows.append(row)
    table = pd.DataFrame(rows)
    table["n"] = table["n"].astype("Int64")
    table["calibration_seed"] = table["calibration_seed"].astype("Int64")  # empty where nothing calibrates
    table = add_holm(table, by=["metric", "relation"])
    table["change"] = [
        verdict(row, row["p_holm"], settings.alpha) if not math.isnan(row["p_value"]) else None
        for _, row in table.iterrows()
    ]
    return add_draw_tests(table, specs, values)


def prompt_outcomes(specs: Sequence[VariantSpec], values: Mapping[str, Mapping[str, pd.Series]],
                    metrics: Sequence[str] = HEADLINE_METRICS) -> pd.DataFrame:
    """Per variant and headline metric, its value on every prompt (1.0/0.0: recalled or not),
    long: ``item`` is the prompt's row in its score table (:func:`check_same_prompts` holds
    them equal across variants; a study's training seeds share the prompt tables)."""
    parts = []
    for spec in specs:
        for metric in metrics:
            if metric in values.get(spec.name, {}):
                series = values[spec.name][metric]
                parts.append(pd.DataFrame({
                    "variant": spec.name, "variant_group": spec.variant_group, "calibration_seed": spec.calibration_seed,
                    "metric": metric, "item": series.index.to_numpy(dtype=np.int64), "value": series.to_numpy(dtype=float),
                }))
    if not parts:
        return pd.DataFrame(columns=OUTCOME_COLUMNS)
    table = pd.concat(parts, ignore_index=True)
    table["calibration_seed"] = table["calibration_seed"].astype("Int64")
    return table[OUTCOME_COLUMNS]


def add_draw_tests(table: pd.DataFrame, specs: Sequence[VariantSpec], values: Mapping[str, Mapping[str, pd.Series]]
                   ) -> pd.DataFrame:
    """``draws_p_value`` on the rows of every variant quantized in more than one calibration
    draw: do its draws differ on the same prompts? Cochran's Q over the draws' per-prompt
    correctness (statsmodels; 0/1 metrics only, NaN otherwise), the same value on each draw's
    row; ``draws_p_holm``: Holm-adjusted across the variants of a metric."""
    from statsmodels.stats.contingency_tables import cochrans_q

    groups: dict[str, list[str]] = {}
    for spec in specs:
        if spec.name in values:
            groups.setdefault(spec.variant_group, []).append(spec.name)
    table = table.copy()
    table["draws_p_value"] = np.nan
    for names in (n for n in groups.values() if len(n) > 1):
        for key in values[names[0]]:
            if not all(key in values[name] for name in names):
                continue
            both = pd.concat([values[name][key].rename(name) for name in names], axis=1, join="inner").dropna()
            if both.empty or not all(is_binary(both[name].to_numpy()) for name in names):
                continue
            differs = both.nunique(axis=1) > 1
            p = float(cochrans_q(both.to_numpy(dtype=int)).pvalue) if differs.any() else 1.0
            metric, relation = split_metric(key)
            rows = table["variant"].isin(names) & (table["metric"] == metric)
            rows &= table["relation"].isna() if relation is None else table["relation"] == relation
            table.loc[rows, "draws_p_value"] = p
    # One test per variant and metric (each draw's row repeats it): adjust the first rows, spread back.
    first = table.dropna(subset=["draws_p_value"]).drop_duplicates(["variant_group", "metric", "relation"])
    adjusted = add_holm(first, by=["metric", "relation"], p_column="draws_p_value", out="draws_p_holm")
    keyed = adjusted.set_index(["variant_group", "metric", "relation"])["draws_p_holm"]
    index = pd.MultiIndex.from_frame(table[["variant_group", "metric", "relation"]])
    table["draws_p_holm"] = keyed.reindex(index).to_numpy() if len(keyed) else np.nan
    return table


def variant_comparisons(
    specs: Sequence[VariantSpec], values: Mapping[str, Mapping[str, pd.Series]],
    settings: StatisticsSettings = StatisticsSettings(),
) -> pd.DataFrame:
    """Every pair of variants with the same (nominal) bit width, on every metric both
    measured on prompts: ``delta`` = ``variant_b - variant_a`` with its paired bootstrap
    interval, the test's p-value and the Holm adjustment across all pairs of the study per
    metric. Pairs are listed in the configured order (``variant_a`` first). Two calibration
    draws of one variant are not a pair (same ``variant_group``): how far draws spread is the
    draw-spread table's question, not a comparison of methods."""
    rows = []
    measured = [s for s in specs if s.name in values and s.bits is not None]
    for a, b in itertools.combinations(measured, 2):
        if a.bits != b.bits or a.variant_group == b.variant_group:
            continue
        for key in values[a.name]:
            if key not in values[b.name]:
                continue
            metric, relation = split_metric(key)
            comparison = _paired(values[a.name][key], values[b.name][key], settings)
            rows.append({
                "bits": a.bits, "variant_a": a.name, "method_a": a.method, "variant_b": b.name, "method_b": b.method,
                "metric": metric, "relation": relation,
                "value_a": float(values[a.name][key].mean()), "value_b": float(values[b.name][key].mean()),
                "n": comparison.n, **{c: getattr(comparison, c) for c in COMPARISON_COLUMNS if hasattr(comparison, c)},
            })
    columns = ["bits", "variant_a", "method_a", "variant_b", "method_b", "metric", "relation", "value_a", "value_b",
               "n", "delta", "delta_ci_low", "delta_ci_high", "delta_stderr", "p_value", "test", "gained", "lost", "p_holm", "change"]
    if not rows:
        return pd.DataFrame(columns=columns)
    table = add_holm(pd.DataFrame(rows), by=["metric", "relation"])
    table["change"] = [pair_verdict(row, settings.alpha) for _, row in table.iterrows()]
    return table[columns]


def pair_verdict(row: pd.Series, alpha: float) -> str:
    """``b > a``, ``a > b`` or ``noise``: which of the pair keeps more, when the test says so."""
    change = verdict(row, row["p_holm"], alpha)
    return {"gain": "b > a", "loss": "a > b"}.get(change, "noise")


def _paired(reference: pd.Series, variant: pd.Series, settings: StatisticsSettings):
    """:func:`paired` on the prompts both sides scored (the same rows of the same prompt table)."""
    both = pd.concat([reference.rename("a"), variant.rename("b")], axis=1, join="inner")
    return paired(both["a"].to_numpy(), both["b"].to_numpy(), settings)


def headline_lines(table: pd.DataFrame) -> list[str]:
    """A narrow text table of a :func:`recall_table` in its variant order: one-hop recall and
    held-out composition with their intervals and the change against the reference, and the
    effective bits."""
    overall = table[table["relation"].isna()].set_index(["variant", "metric"])
    width = max(14, int(table["variant"].str.len().max()) + 1)
    lines = [f"{'variant':<{width}}{'1-hop [95% CI]':<30}{'2-hop held-out [95% CI]':<30}{'bits':>6}"]
    for name in table["variant"].drop_duplicates():
        cells = []
        for metric in HEADLINE_METRICS:
            cell = ""
            if (name, metric) in overall.index:
                row = overall.loc[(name, metric)]
                change = row.get("change")
                cell = f"{row['value']:.1%} [{row['ci_low']:.1%}, {row['ci_high']:.1%}]"
                cell += f" {change}" if isinstance(change, str) else ""
            cells.append(f"{cell:<30}")
        bits = overall.loc[(name, "effective_bits"), "value"] if (name, "effective_bits") in overall.index else np.nan
        lines.append(f"{name:<{width}}{''.join(cells)}{bits:>6.2f}")
    return lines
