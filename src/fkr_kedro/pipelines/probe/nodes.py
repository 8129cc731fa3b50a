"""Nodes of the probe pipeline: capture each variant's activations once, then read them out
(EntRec, neuron attribution) per variant and compare all variants against ``fp`` (linear
probes, representation drift, CnstScore, attribution)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from fkr_kedro.analysis.capture import ActivationCache, CaptureConfig, capture_activations
from fkr_kedro.analysis.drift import drift_table
from fkr_kedro.analysis.neurons import AttributionScores, attribute, attribution_table
from fkr_kedro.analysis.probes import ProbeConfig, run_probes
from fkr_kedro.analysis.readouts import cnst_table, entrec, entrec_table
from fkr_kedro.modeling.load import CausalLM

log = logging.getLogger(__name__)

REFERENCE = "fp"


def _capture_config(probe: dict) -> CaptureConfig:
    settings = dict(probe.get("capture") or {})
    settings.setdefault("progress", False)
    return CaptureConfig(**settings)


def _probe_config(probe: dict) -> ProbeConfig:
    settings = dict(probe.get("probes") or {})
    if settings.get("layers") is not None:
        settings["layers"] = tuple(int(layer) for layer in settings["layers"])
    return ProbeConfig(**settings)


def capture(
    model: CausalLM, one_hop_prompts: pd.DataFrame, two_hop_prompts: pd.DataFrame, probe: dict, variant: str = ""
) -> ActivationCache:
    """One batched pass of the variant over both prompt tables; every analysis reuses it."""
    return capture_activations(
        model.model, model.tokenizer, one_hop_prompts, two_hop_prompts, _capture_config(probe), model_name=variant
    )


def readouts(
    model: CausalLM, activations: ActivationCache, two_hop_prompts: pd.DataFrame, probe: dict
) -> tuple[pd.DataFrame, AttributionScores]:
    """EntRec per chain and layer, and Imp attribution scores, through the variant's own head."""
    entrec_settings = dict(probe.get("entrec") or {})
    matrix = entrec(model.model, activations, **entrec_settings)
    settings = dict(probe.get("attribution") or {})
    settings.pop("top_k", None)  # used by the summary
    settings.setdefault("progress", False)
    scores = attribute(model.model, activations, **settings)
    return entrec_table(matrix, two_hop_prompts), scores


def _by_variant(variants: list[str], values: tuple) -> dict:
    if len(variants) != len(values):
        raise ValueError(f"{len(variants)} variants but {len(values)} inputs")
    return dict(zip(variants, values))


def summarize_probes(
    variants: list[str], one_hop_prompts: pd.DataFrame, two_hop_prompts: pd.DataFrame, probe: dict, *caches: ActivationCache
) -> pd.DataFrame:
    """Every probe at every layer: tidy (variant, layer, probe, metric, value); logs the bridge
    probe's best layer beside chance and the shuffled-label control."""
    results = run_probes(
        _by_variant(variants, caches),
        {"one_hop": one_hop_prompts, "two_hop": two_hop_prompts},
        reference=REFERENCE,
        config=_probe_config(probe),
    )
    for name in ("bridge", "subject"):
        summary = probe_headline(results, name)
        if summary is None:
            continue
        ref_layer = summary.attrs["reference_layer"]
        lines = [
            f"{variant}: best layer {int(row.best_layer)} accuracy {row.best_accuracy:.3f}; "
            f"{REFERENCE} probe at layer {ref_layer}: {row.transfer_accuracy:.3f} "
            f"(chance {row.chance:.3f}, shuffled-label control {row.control:.3f})"
            for variant, row in summary.iterrows()
        ]
        log.info("%s probe vs chance and shuffled control:\n  %s", name, "\n  ".join(lines))
    return results


def probe_headline(results: pd.DataFrame, name: str) -> pd.DataFrame | None:
    """Per variant: its best layer and accuracy there, the transfer accuracy of the fp probe
    at fp's best layer (``attrs["reference_layer"]``), and fp's chance rate and shuffled-label
    control at that layer."""
    table = results[results["probe"] == name]
    if table.empty:
        return None
    ref = table[table["variant"] == REFERENCE].pivot(index="layer", columns="metric", values="value")
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


def summarize_drift(variants: list[str], *caches: ActivationCache) -> pd.DataFrame:
    """Cosine and linear CKA of every variant's residual stream against fp: tidy (variant,
    site, layer, metric, value)."""
    return drift_table(_by_variant(variants, caches), reference=REFERENCE)


def summarize_cnst(variants: list[str], two_hop_prompts: pd.DataFrame, *caches: ActivationCache) -> pd.DataFrame:
    """CnstScore and its terms, averaged over chains (all, and per split): tidy (variant,
    layer, split, metric, value). CnstScore compares output distributions, so its layer is
    the last one (``n_layers``, the model's output)."""
    rows = []
    for variant, cache in _by_variant(variants, caches).items():
        table = cnst_table(cache, two_hop_prompts)
        metrics = [c for c in ("cnst_score", "xent_2h_1h", "xent_1h_2h", "entropy_2h", "entropy_1h") if c in table]
        groups = [("all", table)]
        if "split" in table:
            groups += [(str(split), frame) for split, frame in table.groupby("split", sort=True)]
        for split, frame in groups:
            for metric in metrics:
                rows.append((variant, cache.n_layers, split, metric, float(frame[metric].mean())))
            rows.append((variant, cache.n_layers, split, "n_chains", float(len(frame))))
    return pd.DataFrame(rows, columns=["variant", "layer", "split", "metric", "value"])


def summarize_entrec(variants: list[str], *tables: pd.DataFrame) -> pd.DataFrame:
    """EntRec averaged over chains per layer (all, and per split): tidy (variant, layer,
    split, metric, value) with metrics ``entrec_mean`` and ``entrec_median``."""
    rows = []
    for variant, table in _by_variant(variants, tables).items():
        groups = [("all", table)]
        if "split" in table:
            groups += [(str(split), frame) for split, frame in table.groupby("split", sort=True)]
        for split, frame in groups:
            stats = frame.groupby("layer")["entrec"].agg(["mean", "median"])
            for layer, values in stats.iterrows():
                rows.append((variant, int(layer), split, "entrec_mean", float(values["mean"])))
                rows.append((variant, int(layer), split, "entrec_median", float(values["median"])))
    return pd.DataFrame(rows, columns=["variant", "layer", "split", "metric", "value"])


def summarize_attribution(variants: list[str], probe: dict, *scores: AttributionScores) -> pd.DataFrame:
    """Per-layer neuron and component attribution against fp: tidy (variant, layer, metric, value)."""
    top_k = int((probe.get("attribution") or {}).get("top_k", 300))
    return attribution_table(_by_variant(variants, scores), reference=REFERENCE, top_k=top_k)
