"""Markdown tables of a study with several training seeds (the ones docs/statistics.md
shows): each variant's change against the reference per training seed and calibration draw,
the summary across seeds, and the variance components.

    python scripts/seed_tables.py data/seeds/08_reporting
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

LABELS = {"one_hop.accuracy": "one-hop", "two_hop.held_out.accuracy": "held-out composition"}


def _points(value: float) -> str:
    return "" if pd.isna(value) else f"{100 * value:+.1f}"


def per_seed_and_draw(deltas: pd.DataFrame) -> str:
    """One row per variant and metric, one column per (seed, draw): the change in points with
    its within-seed verdict (L: loss, G: gain, blank: within the noise)."""
    deltas = deltas.copy()
    deltas["draw"] = deltas.groupby(["training_seed", "variant_group", "metric"]).cumcount()
    columns = sorted({(int(s), int(d)) for s, d in zip(deltas["training_seed"], deltas["draw"])})
    head = "| variant | metric | " + " | ".join(f"s{s} d{d}" for s, d in columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 2)]
    for (group, metric), part in deltas.groupby(["variant_group", "metric"], sort=False):
        cells = {(int(r.training_seed), int(r.draw)): _points(r.delta) + {"loss": " L", "gain": " G"}.get(r.change, "")
                 for r in part.itertuples()}
        lines.append(f"| {group} | {LABELS.get(metric, metric)} | " + " | ".join(cells.get(c, "") for c in columns) + " |")
    return "\n".join(lines)


def summary(table: pd.DataFrame) -> str:
    lines = ["| variant | metric | mean change | 95% t interval | Holm p | across seeds | losses in seeds |",
             "|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.variant_group} | {LABELS.get(r.metric, r.metric)} | {_points(r.delta_mean)} | "
                     f"[{_points(r.delta_ci_low)}, {_points(r.delta_ci_high)}] | {r.p_holm:.2g} | {r.change} | "
                     f"{r.seeds_with_loss} of {r.seeds} |")
    return "\n".join(lines)


def components(table: pd.DataFrame) -> str:
    def squared(value: float, cut: bool = False) -> str:
        return "" if pd.isna(value) else ("0*" if cut else f"{10_000 * value:.2f}")

    def with_interval(r, name: str) -> str:
        point = squared(getattr(r, name), getattr(r, f"{name}_truncated"))
        low, high = getattr(r, f"{name}_ci_low"), getattr(r, f"{name}_ci_high")
        return f"{point} [{squared(low)}, {squared(high)}]" if point and not pd.isna(low) else point

    def share(value: float) -> str:
        return "" if pd.isna(value) else f"{100 * value:.0f}%"

    lines = ["| variant | metric | prompts | calibration [95% CI] | seed [95% CI] | shares (prompts / calibration / seed) |",
             "|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.variant_group} | {LABELS.get(r.metric, r.metric)} | {10_000 * r.prompts:.2f} | "
                     f"{with_interval(r, 'calibration')} | {with_interval(r, 'seed')} | "
                     f"{share(r.share_prompts)} / {share(r.share_calibration)} / {share(r.share_seed)} |")
    return "\n".join(lines)


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "data/seeds/08_reporting")
    deltas = pd.read_csv(folder / "seed_deltas.csv")
    print("### Change against the reference per training seed (s) and calibration draw (d), points\n")
    print(per_seed_and_draw(deltas) + "\n")
    print("### Across seeds\n")
    print(summary(pd.read_csv(folder / "seed_summary.csv")) + "\n")
    print("### Variance components (squared points)\n")
    print(components(pd.read_csv(folder / "variance_components.csv")))


if __name__ == "__main__":
    main()
