"""Cross-variant summaries: the tidy tables the evaluate and probe pipelines write, built
from each variant's results (mappings from variant name to its result, reference first)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..quantization.variants import VariantSpec
from .capture import ActivationCache
from .readouts import cnst_table


# Metrics that also come per relation, as ``<metric>.<relation>``.
PER_RELATION = ("one_hop.accuracy", "stored_bits")


def recall_table(specs: Sequence[VariantSpec], metrics: Mapping[str, dict], footprints: Mapping[str, dict]) -> pd.DataFrame:
    """One tidy table: a row per variant and metric (relation-level metrics keep their
    relation in its own column), with the variant's method, bits, group size and
    calibration size."""
    rows = []
    for spec in specs:
        for key, value in {**metrics[spec.name], **footprints[spec.name]}.items():
            prefix = next((p for p in PER_RELATION if key.startswith(f"{p}.")), None)
            relation = key.removeprefix(f"{prefix}.") if prefix else None
            rows.append(
                {
                    "variant": spec.name,
                    "method": spec.method,
                    "bits": spec.bits,
                    "group_size": spec.group_size,
                    "calibration_size": spec.calibration_size,
                    "metric": prefix or key,
                    "relation": relation,
                    "value": float(value),
                }
            )
    return pd.DataFrame(rows)


def recall_lines(table: pd.DataFrame) -> list[str]:
    """A narrow text table (variant, one-hop recall, held-out two-hop, effective bits) of a
    :func:`recall_table`, in its variant order."""
    headline = table[table["relation"].isna()].pivot(index="variant", columns="metric", values="value")
    lines = [f"{'variant':<13}{'1-hop':>8}{'2-hop':>8}{'bits':>7}"]
    for name in table["variant"].drop_duplicates():
        row = headline.loc[name]
        lines.append(
            f"{name:<13}{row['one_hop.accuracy']:>8.2%}"
            f"{row.get('two_hop.held_out.accuracy', np.nan):>8.2%}{row.get('effective_bits', np.nan):>7.2f}"
        )
    return lines


def probe_headline(results: pd.DataFrame, name: str, reference: str = "fp") -> pd.DataFrame | None:
    """Per variant: its best layer and accuracy there, the transfer accuracy of the
    reference's probe at the reference's best layer (``attrs["reference_layer"]``), and the
    reference's chance rate and shuffled-label control at that layer. None when the results
    hold no probe ``name``."""
    table = results[results["probe"] == name]
    if table.empty:
        return None
    ref = table[table["variant"] == reference].pivot(index="layer", columns="metric", values="value")
    best = int(ref["accuracy"].idxmax())
    rows = []
    for variant, frame in table.groupby("variant", sort=False):
        wide = frame.pivot(index="layer", columns="metric", values="value")
        rows.append(
            {
                "variant": variant,
                "best_layer": int(wide["accuracy"].idxmax()),
                "best_accuracy": float(wide["accuracy"].max()),
                "transfer_accuracy": float(wide.loc[best, "transfer_accuracy"]),
                "chance": float(ref.loc[best, "chance"]),
                "control": float(ref.loc[best, "control_accuracy"]) if "control_accuracy" in ref else np.nan,
            }
        )
    frame = pd.DataFrame(rows).set_index("variant")
    frame.attrs["reference_layer"] = best
    return frame


def _splits(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The whole table as split ``all``, then each split of its ``split`` column."""
    groups = [("all", table)]
    if "split" in table:
        groups += [(str(split), frame) for split, frame in table.groupby("split", sort=True)]
    return groups


def cnst_summary(caches: Mapping[str, ActivationCache], two_hop_prompts: pd.DataFrame) -> pd.DataFrame:
    """CnstScore and its terms, averaged over chains (all, and per split): tidy (variant,
    layer, split, metric, value). CnstScore compares output distributions, so its layer is
    the last one (``n_layers``, the model's output)."""
    rows = []
    for variant, cache in caches.items():
        table = cnst_table(cache, two_hop_prompts)
        metrics = [c for c in ("cnst_score", "xent_2h_1h", "xent_1h_2h", "entropy_2h", "entropy_1h") if c in table]
        for split, frame in _splits(table):
            for metric in metrics:
                rows.append((variant, cache.n_layers, split, metric, float(frame[metric].mean())))
            rows.append((variant, cache.n_layers, split, "n_chains", float(len(frame))))
    return pd.DataFrame(rows, columns=["variant", "layer", "split", "metric", "value"])


def entrec_summary(tables: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """EntRec averaged over chains per layer (all, and per split): tidy (variant, layer,
    split, metric, value) with metrics ``entrec_mean`` and ``entrec_median``."""
    rows = []
    for variant, table in tables.items():
        for split, frame in _splits(table):
            stats = frame.groupby("layer")["entrec"].agg(["mean", "median"])
            for layer, values in stats.iterrows():
                rows.append((variant, int(layer), split, "entrec_mean", float(values["mean"])))
                rows.append((variant, int(layer), split, "entrec_median", float(values["median"])))
    return pd.DataFrame(rows, columns=["variant", "layer", "split", "metric", "value"])
