"""The few lines a finished run ends with: what the study found (read from its recall table),
where the report is, and the command that opens the study in the MLflow UI.

Knows nothing of Kedro; ``fkr_kedro.hooks.summary`` hands it the tables and paths.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable

import pandas as pd

# The headline metrics of recall_by_variant (tidy: variant, metric, relation, value, ...),
# with how a reader calls them.
HEADLINES = (("one_hop.accuracy", "one-hop recall"), ("two_hop.held_out.accuracy", "two-hop held-out (composition)"))


def headline_lines(recall: pd.DataFrame, reference: str) -> list[str]:
    """One line per headline metric: the reference variant's value, and the variant that lost
    most against it with the difference in points and its Holm-adjusted p (chance beside a
    two-hop value when the table has it). Metrics or variants the table lacks are left out."""
    overall = recall[recall["relation"].isna()] if "relation" in recall else recall
    lines = []
    for metric, label in HEADLINES:
        rows = overall[overall["metric"] == metric].set_index("variant")
        if reference not in rows.index:
            continue
        ref = float(rows.loc[reference, "value"])
        text = f"{label}: {reference} {ref:.1%}"
        chance = overall[(overall["metric"] == metric.replace(".accuracy", ".chance")) & (overall["variant"] == reference)]
        if metric != "one_hop.accuracy" and len(chance):
            text += f" (chance {float(chance['value'].iloc[0]):.1%})"
        others = rows.drop(index=reference)
        if len(others):
            worst = others["value"].astype(float).idxmin()
            value = float(others.loc[worst, "value"])
            text += f"; lowest {worst} {value:.1%} ({(value - ref) * 100:+.1f} points"
            p = others.loc[worst].get("p_holm") if "p_holm" in others else None
            text += f", Holm p {float(p):.2g})" if p is not None and pd.notna(p) else ")"
        lines.append(text)
    return lines


def mlflow_ui_command(uri: str, experiment_id: str | None = None) -> str:
    """How to open the study's runs: the server's address for a tracking server, else the
    ``mlflow ui`` command on the store (and the experiment's page once it runs)."""
    page = f"#/experiments/{experiment_id}/runs?workflowType=machine_learning" if experiment_id else ""
    if uri.startswith(("http://", "https://")):
        return f"MLflow: {uri.rstrip('/')}/{page}"
    text = f"MLflow: `mlflow ui --backend-store-uri {shlex.quote(uri)}`"
    return text + (f", then http://127.0.0.1:5000/{page}" if page else "")


def written_lines(saved: Iterable[str], limit: int = 8) -> str:
    """The outputs a run wrote, named (the first ``limit``) and counted."""
    names = sorted(saved)
    if not names:
        return "This run wrote no output."
    shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
    return f"This run wrote {len(names)} output(s): {shown}."
