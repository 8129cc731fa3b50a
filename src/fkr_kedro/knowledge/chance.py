"""Chance rates of the recall tasks: the accuracy of the best constant guess.

Within a group of prompts (a composition, a relation) a model that always answers the
group's most frequent answer is right on that answer's share of the group. Every recall
and scaling table reports this rate beside its accuracy (the scaling law adjusts accuracy
by it); probes have their own chance (the majority class of the test split, in
:mod:`fkr_kedro.analysis.probes`).
"""

from __future__ import annotations

import pandas as pd


def chance_rates(table: pd.DataFrame, by: str = "composition", answer: str = "e3") -> pd.Series:
    """Per value of ``by``, the accuracy of the best constant guess (the share of the most
    frequent ``answer``). The defaults give a two-hop table's rate per composition."""
    return table.groupby(by)[answer].agg(lambda s: s.value_counts(normalize=True).iloc[0])


def chance_rate(table: pd.DataFrame, by: str, answer: str, rows: pd.DataFrame | None = None) -> float:
    """The best constant guess per group of ``table`` (:func:`chance_rates`), averaged over
    ``rows`` (default: the table's own rows), e.g. the held-out chains of a two-hop table."""
    rows = table if rows is None else rows
    return float(rows[by].map(chance_rates(table, by, answer)).mean())
