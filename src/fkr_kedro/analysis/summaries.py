"""Cross-variant summaries of the probe pipeline (the recall table is
:mod:`fkr_kedro.analysis.comparisons`), built
from each variant's results (mappings from variant name to its result, reference first)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .capture import ActivationCache
from .readouts import cnst_table
from .statistics import StatisticsSettings, add_holm, mean, paired


def probe_headline(results: pd.DataFrame, name: str, reference: str = "fp") -> pd.DataFrame | None:
    """Per variant: its best layer and accuracy there, the transfer accuracy of the
    reference's probe at the reference's best layer (``attrs["reference_layer"]``) with its
    interval (``transfer_ci_low``/``transfer_ci_high``) and its comparison with the
    reference's (``transfer_delta``, ``transfer_p_holm``; NaN for the reference and where the
    results carry no statistics), and the reference's chance rate and shuffled-label control
    at that layer. None when the results hold no probe ``name``."""
    table = results[results["probe"] == name]
    if table.empty:
        return None
    ref = table[table["variant"] == reference].pivot(index="layer", columns="metric", values="value")
    best = int(ref["accuracy"].idxmax())
    rows = []
    for variant, frame in table.groupby("variant", sort=False):
        wide = frame.pivot(index="layer", columns="metric", values="value")
        transfer = frame[(frame["metric"] == "transfer_accuracy") & (frame["layer"] == best)].iloc[0]
        rows.append(
            {
                "variant": variant,
                "best_layer": int(wide["accuracy"].idxmax()),
                "best_accuracy": float(wide["accuracy"].max()),
                "transfer_accuracy": float(wide.loc[best, "transfer_accuracy"]),
                **{
                    f"transfer_{column}": float(transfer.get(column, np.nan))
                    for column in ("ci_low", "ci_high", "delta", "p_holm")
                },
                "chance": float(ref.loc[best, "chance"]),
                "control": float(ref.loc[best, "control_accuracy"]) if "control_accuracy" in ref else np.nan,
            }
        )
    frame = pd.DataFrame(rows).set_index("variant")
    frame.attrs["reference_layer"] = best
    return frame


def _splits(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The whole table as split ``all``, then each split of its ``split`` column (each frame
    keeps the table's index, so rows of one chain line up across variants)."""
    groups = [("all", table)]
    if "split" in table:
        groups += [(str(split), frame) for split, frame in table.groupby("split", sort=True)]
    return groups


# Beside ``value``: its interval, and its comparison with the reference's (NaN where neither
# applies); ``p_holm`` adjusts the p-values of all variants within one (layer, split, metric).
READOUT_STATISTIC_COLUMNS = (
    "ci_low", "ci_high", "stderr", "delta", "delta_ci_low", "delta_ci_high", "p_value", "p_holm",
)


def _readout_table(rows: list[dict], columns: Sequence[str], families: Sequence[str]) -> pd.DataFrame:
    """Tidy rows (dicts with some of :data:`READOUT_STATISTIC_COLUMNS`) as one table, NaN
    where a row has none, with ``p_holm`` per family of tests."""
    table = pd.DataFrame(rows, columns=[*columns, *READOUT_STATISTIC_COLUMNS])
    return add_holm(table.astype({c: float for c in READOUT_STATISTIC_COLUMNS}), by=families)


def _readout_statistics(values: np.ndarray, reference_values: np.ndarray | None, settings: StatisticsSettings) -> dict:
    """The interval of the mean of ``values`` (bootstrap over chains) and, when given, the
    paired comparison with the reference's values on the same chains (Wilcoxon)."""
    found = mean(values, settings)
    out = {"ci_low": found.ci_low, "ci_high": found.ci_high, "stderr": found.stderr}
    if reference_values is not None:
        comparison = paired(reference_values, values, settings)
        out.update(
            delta=comparison.delta, delta_ci_low=comparison.delta_ci_low,
            delta_ci_high=comparison.delta_ci_high, p_value=comparison.p_value,
        )
    return out


def _readout_reference(variants: Mapping, reference: str | None) -> str:
    reference = reference if reference is not None else next(iter(variants), None)
    if reference not in variants:
        raise KeyError(f"reference {reference!r} is not among the variants {sorted(variants)}")
    return reference


def cnst_summary(
    caches: Mapping[str, ActivationCache],
    two_hop_prompts: pd.DataFrame,
    reference: str | None = None,
    settings: StatisticsSettings = StatisticsSettings(),
) -> pd.DataFrame:
    """CnstScore and its terms, averaged over chains (all, and per split): tidy (variant,
    layer, split, metric, value). CnstScore compares output distributions, so its layer is
    the last one (``n_layers``, the model's output).

    ``cnst_score`` rows carry the 1 - alpha percentile bootstrap interval of the mean over
    chains (``ci_low``/``ci_high``, ``stderr``: the sampling of chains, not another model),
    and, for every variant but ``reference`` (default: the first), ``delta`` (variant minus
    reference, on the same chains), its paired bootstrap interval, the Wilcoxon signed-rank
    ``p_value`` and ``p_holm`` (Holm over the variants within each split). Other rows: NaN."""
    reference = _readout_reference(caches, reference)
    chains = {variant: cnst_table(cache, two_hop_prompts) for variant, cache in caches.items()}
    ref_scores = chains[reference]["cnst_score"] if "cnst_score" in chains[reference] else None
    rows = []
    for variant, cache in caches.items():
        table = chains[variant]
        if len(table) != len(chains[reference]):
            raise ValueError(
                f"{variant!r} has CnstScore for {len(table)} chains, {reference!r} for {len(chains[reference])}"
            )
        metrics = [c for c in ("cnst_score", "xent_2h_1h", "xent_1h_2h", "entropy_2h", "entropy_1h") if c in table]
        for split, frame in _splits(table):
            key = {"variant": variant, "layer": cache.n_layers, "split": split}
            for metric in metrics:
                row = {**key, "metric": metric, "value": float(frame[metric].mean())}
                if metric == "cnst_score":
                    versus = ref_scores.loc[frame.index].to_numpy() if variant != reference else None
                    row.update(_readout_statistics(frame[metric].to_numpy(), versus, settings))
                rows.append(row)
            rows.append({**key, "metric": "n_chains", "value": float(len(frame))})
    return _readout_table(rows, ["variant", "layer", "split", "metric", "value"], ["layer", "split", "metric"])


def entrec_summary(
    tables: Mapping[str, pd.DataFrame],
    reference: str | None = None,
    settings: StatisticsSettings = StatisticsSettings(),
) -> pd.DataFrame:
    """EntRec averaged over chains per layer (all, and per split): tidy (variant, layer,
    split, metric, value) with metrics ``entrec_mean`` and ``entrec_median``.

    ``entrec_mean`` rows carry the 1 - alpha percentile bootstrap interval of the mean over
    chains (``ci_low``/``ci_high``, ``stderr``: the sampling of chains), and, for every variant
    but ``reference`` (default: the first), ``delta`` (variant minus reference on the same
    chains, matched by ``row``), its paired bootstrap interval, the Wilcoxon signed-rank
    ``p_value`` and ``p_holm`` (Holm over the variants within each layer and split).
    ``entrec_median`` rows: NaN."""
    reference = _readout_reference(tables, reference)
    by_chain = tables[reference].set_index(["row", "layer"])["entrec"] if "row" in tables[reference] else None
    rows = []
    for variant, table in tables.items():
        for split, frame in _splits(table):
            for layer, chains in frame.groupby("layer", sort=True):
                key = {"variant": variant, "layer": int(layer), "split": split}
                values = chains["entrec"].to_numpy(dtype=float)
                versus = None
                if variant != reference and by_chain is not None:
                    versus = by_chain.reindex(pd.MultiIndex.from_arrays([chains["row"], chains["layer"]])).to_numpy()
                rows.append({**key, "metric": "entrec_mean", "value": float(chains["entrec"].mean()),
                             **_readout_statistics(values, versus, settings)})
                rows.append({**key, "metric": "entrec_median", "value": float(chains["entrec"].median())})
    return _readout_table(rows, ["variant", "layer", "split", "metric", "value"], ["layer", "split", "metric"])
