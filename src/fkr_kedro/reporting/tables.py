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
    spec_columns = [c for c in ("method", "bits", "group_size", "calibration_size") if c in recall]
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
