"""Print the headline rows of recall_by_variant.csv as a Markdown table: each metric with its
95% interval, the paired difference with the reference and its Holm-adjusted p-value.

    python scripts/stats_table.py [data/08_reporting/recall_by_variant.csv] [metric ...]

(the default environment's table; another environment's is data/<env>/08_reporting/...)

Default metrics: one-hop recall and held-out composition (docs/statistics.md uses it)."""

from __future__ import annotations

import sys

import pandas as pd

DEFAULT_METRICS = ("one_hop.accuracy", "two_hop.held_out.accuracy")


def table(recall: pd.DataFrame, metrics: tuple[str, ...]) -> str:
    rows = recall[recall["relation"].isna() & recall["metric"].isin(metrics)]
    header = ["variant"] + [f"{m} [95% CI]" for m in metrics] + [f"{m}: delta [95% CI], Holm p" for m in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant, frame in rows.groupby("variant", sort=False):
        by = frame.set_index("metric")
        cells, deltas = [], []
        for m in metrics:
            if m not in by.index:
                cells.append("")
                deltas.append("")
                continue
            r = by.loc[m]
            cells.append(f"{100 * r['value']:.1f}% [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]")
            if pd.isna(r["delta"]):
                deltas.append("reference")
            else:
                verdict = f" **{r['change']}**" if r["change"] in ("loss", "gain") else ""
                deltas.append(f"{100 * r['delta']:+.1f} [{100 * r['delta_ci_low']:+.1f}, {100 * r['delta_ci_high']:+.1f}], "
                              f"p = {r['p_holm']:.2g}{verdict}")
        lines.append("| " + " | ".join([variant, *cells, *deltas]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else "data/08_reporting/recall_by_variant.csv"
    print(table(pd.read_csv(path), tuple(sys.argv[2:]) or DEFAULT_METRICS))
