"""Reshaping the pipelines' tidy tables for figures and findings."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class StudyTables:
    """The tidy tables of one study that the summary table, the findings and the per-variant
    figure read together: ``recall_by_variant`` and the probe, EntRec, attribution, drift and
    CnstScore results (``variant``, ``layer``, ``metric``, ``value`` ...)."""

    recall: pd.DataFrame
    probes: pd.DataFrame
    entrec: pd.DataFrame
    attribution: pd.DataFrame
    drift: pd.DataFrame
    cnst: pd.DataFrame


def headline(recall: pd.DataFrame) -> pd.DataFrame:
    """One row per variant (in the table's order): method, bits, group size, calibration size
    and every variant-level metric of the ``recall_by_variant`` table as columns."""
    overall = recall[recall["relation"].isna()] if "relation" in recall else recall
    wide = overall.pivot_table(index="variant", columns="metric", values="value", aggfunc="first", sort=False)
    spec_columns = [c for c in ("method", "bits", "group_size", "calibration_size", "calibration_seed", "variant_group")
                    if c in recall]
    specs = recall.drop_duplicates("variant").set_index("variant")[spec_columns]
    return specs.join(wide)


def metric_interval(recall: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The variant-level rows of one metric: index variant, columns ``value``, ``ci_low`` and
    ``ci_high`` (NaN where the table carries no interval)."""
    rows = recall[recall["metric"] == metric]
    if "relation" in rows:
        rows = rows[rows["relation"].isna()]
    rows = rows.drop_duplicates("variant").set_index("variant")
    return rows.reindex(columns=["value", "ci_low", "ci_high"])


# The headline metrics whose spread across calibration draws the report shows.
DRAW_METRICS = {"one_hop.accuracy": "one-hop recall", "two_hop.held_out.accuracy": "two-hop held-out"}
DRAW_SPREAD_COLUMNS = ["variant_group", "metric", "draws", "seeds", "min", "max", "range", "sd", "ci_half_width",
                       "draws_p_holm"]


def draw_spread(recall: pd.DataFrame, metrics: tuple[str, ...] = tuple(DRAW_METRICS)) -> pd.DataFrame:
    """Per variant measured in more than one calibration draw (``variant_group`` shared by
    several variants) and headline metric: the number of draws, their seeds, the lowest and
    highest value, the range, the standard deviation across draws (n - 1) and, beside them,
    the mean half-width of the draws' own intervals over prompts (``ci_high - ci_low`` over 2),
    and the test of whether the draws differ on the same prompts (``draws_p_holm``: Cochran's
    Q, Holm across variants; NaN in tables written before it existed).
    Empty (with these columns) when no variant has more than one draw."""
    rows = []
    if "variant_group" in recall:
        for metric in metrics:
            overall = recall[recall["metric"] == metric]
            if "relation" in overall:
                overall = overall[overall["relation"].isna()]
            overall = overall.drop_duplicates("variant")
            for group, part in overall.groupby("variant_group", sort=False):
                if len(part) < 2:
                    continue
                values = part["value"].astype(float)
                half = ((part["ci_high"] - part["ci_low"]) / 2).mean() if "ci_low" in part else float("nan")
                seeds = part["calibration_seed"] if "calibration_seed" in part else pd.Series(dtype=float)
                rows.append({
                    "variant_group": group, "metric": metric, "draws": len(part),
                    "seeds": ", ".join(str(int(s)) for s in seeds.dropna()),
                    "min": values.min(), "max": values.max(), "range": values.max() - values.min(),
                    "sd": values.std(ddof=1), "ci_half_width": float(half),
                    "draws_p_holm": float(part["draws_p_holm"].iloc[0]) if "draws_p_holm" in part else float("nan"),
                })
    return pd.DataFrame(rows, columns=DRAW_SPREAD_COLUMNS)


def variant_order(recall: pd.DataFrame, reference: str) -> list[str]:
    """The reference first, then by effective bits (most first), then by name."""
    info = headline(recall)
    rest = info.drop(index=reference, errors="ignore")
    if "effective_bits" in rest:
        rest = rest.assign(_name=rest.index).sort_values(["effective_bits", "_name"], ascending=[False, True])
    return ([reference] if reference in info.index else []) + list(rest.index)


def layer_metric(table: pd.DataFrame, metric: str, column: str = "value", **filters) -> pd.DataFrame:
    """A metric of a tidy per-layer table as a frame: index layer, one column per variant
    (of ``column``: the value, or e.g. its ``ci_low``; empty when the table lacks it)."""
    rows = table[table["metric"] == metric]
    for name, value in filters.items():
        rows = rows[rows[name] == value]
    if column not in rows:
        return pd.DataFrame()
    return rows.pivot_table(index="layer", columns="variant", values=column, aggfunc="first").sort_index()


def neuron_retention(attribution: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Per decoder layer and variant, the share of the reference's top attribution neurons
    still above the reference's threshold (``top_neurons_retained`` over the reference's
    own count; NaN in a layer that holds none of them)."""
    retained = layer_metric(attribution, "top_neurons_retained")
    if reference not in retained:
        raise ValueError(f"the attribution table has no {reference!r} rows to compare against")
    base = retained[reference].where(retained[reference] > 0)
    return retained.div(base, axis=0)
