"""Nodes of the probe pipeline: capture each variant's activations once, then read them out
(EntRec, neuron attribution) per variant and compare all variants against the reference
(linear probes, representation drift, CnstScore, attribution). The nodes that read every
variant take ``**inputs`` keyed by dataset name (see :mod:`fkr_kedro.pipelines.wiring`)."""

from __future__ import annotations

import logging

import pandas as pd

from fkr_kedro.analysis.capture import ActivationCache, capture_activations
from fkr_kedro.analysis.drift import drift_table
from fkr_kedro.analysis.neurons import AttributionScores, attribute, attribution_table
from fkr_kedro.analysis.probes import run_probes
from fkr_kedro.analysis.readouts import entrec, entrec_table
from fkr_kedro.analysis.summaries import cnst_summary, entrec_summary, probe_headline
from fkr_kedro.modeling.load import CausalLM
from fkr_kedro.parameters import ProbeSettings
from fkr_kedro.pipelines.wiring import by_namespace

log = logging.getLogger(__name__)

# The variant every other one is compared against; the pipeline requires it.
REFERENCE = "fp"


def capture(
    model: CausalLM, one_hop_prompts: pd.DataFrame, two_hop_prompts: pd.DataFrame, probe: ProbeSettings, variant: str = ""
) -> ActivationCache:
    """One batched pass of the variant over both prompt tables; every analysis reuses it."""
    return capture_activations(
        model.model, model.tokenizer, one_hop_prompts, two_hop_prompts, probe.capture, model_name=variant
    )


def readouts(
    model: CausalLM, activations: ActivationCache, two_hop_prompts: pd.DataFrame, probe: ProbeSettings
) -> tuple[pd.DataFrame, AttributionScores]:
    """EntRec per chain and layer, and Imp attribution scores, through the variant's own head."""
    matrix = entrec(model.model, activations, layers=probe.entrec.layers)
    settings = probe.attribution
    scores = attribute(
        model.model, activations, prompt_set=settings.prompt_set, max_prompts=settings.max_prompts,
        norm=settings.norm, candidates=settings.candidates, progress=False,
    )
    return entrec_table(matrix, two_hop_prompts), scores


def summarize_probes(
    one_hop_prompts: pd.DataFrame, two_hop_prompts: pd.DataFrame, probe: ProbeSettings, **activations: ActivationCache
) -> pd.DataFrame:
    """Every probe at every layer: tidy (variant, layer, probe, metric, value); logs the bridge
    probe's best layer beside chance and the shuffled-label control."""
    results = run_probes(
        by_namespace(activations, "activations"),
        {"one_hop": one_hop_prompts, "two_hop": two_hop_prompts},
        reference=REFERENCE,
        config=probe.probes,
    )
    for name in ("bridge", "subject"):
        summary = probe_headline(results, name, REFERENCE)
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


def summarize_drift(**activations: ActivationCache) -> pd.DataFrame:
    """Cosine and linear CKA of every variant's residual stream against the reference: tidy
    (variant, site, layer, metric, value)."""
    return drift_table(by_namespace(activations, "activations"), reference=REFERENCE)


def summarize_cnst(two_hop_prompts: pd.DataFrame, **activations: ActivationCache) -> pd.DataFrame:
    return cnst_summary(by_namespace(activations, "activations"), two_hop_prompts)


def summarize_entrec(**entrec_tables: pd.DataFrame) -> pd.DataFrame:
    return entrec_summary(by_namespace(entrec_tables, "entrec"))


def summarize_attribution(probe: ProbeSettings, **scores: AttributionScores) -> pd.DataFrame:
    """Per-layer neuron and component attribution against the reference: tidy (variant,
    layer, metric, value)."""
    return attribution_table(by_namespace(scores, "attribution"), reference=REFERENCE, top_k=probe.attribution.top_k)
