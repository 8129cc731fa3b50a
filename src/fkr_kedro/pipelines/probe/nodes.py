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
from fkr_kedro.reporting.findings import ReportSettings

log = logging.getLogger(__name__)


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
    one_hop_prompts: pd.DataFrame,
    two_hop_prompts: pd.DataFrame,
    probe: ProbeSettings,
    report: ReportSettings,
    **activations: ActivationCache,
) -> pd.DataFrame:
    """Every probe at every layer against ``report.reference``: tidy (variant, layer, probe,
    metric, value) with intervals and paired tests (:mod:`fkr_kedro.analysis.probes`); logs the
    bridge and subject probes' best layer, the reference probe's transfer accuracy with its
    interval, beside chance and the shuffled-label control."""
    results = run_probes(
        by_namespace(activations, "activations"),
        {"one_hop": one_hop_prompts, "two_hop": two_hop_prompts},
        reference=report.reference,
        config=probe.probes,
        settings=report,
    )
    for name in ("bridge", "subject"):
        summary = probe_headline(results, name, report.reference)
        if summary is None:
            continue
        ref_layer = summary.attrs["reference_layer"]
        lines = [_headline_line(variant, row, report, ref_layer) for variant, row in summary.iterrows()]
        log.info("%s probe vs chance and shuffled control:\n  %s", name, "\n  ".join(lines))
    return results


def _headline_line(variant: str, row: pd.Series, report: ReportSettings, ref_layer: int) -> str:
    level = f"{1 - report.alpha:.0%}"
    versus = (
        f", {row.transfer_delta:+.3f} vs {report.reference} (Holm p {row.transfer_p_holm:.2g})"
        if variant != report.reference and pd.notna(row.transfer_delta) else ""
    )
    return (
        f"{variant}: best layer {int(row.best_layer)} accuracy {row.best_accuracy:.3f}; "
        f"{report.reference} probe at layer {ref_layer}: {row.transfer_accuracy:.3f} "
        f"[{level} CI {row.transfer_ci_low:.3f}-{row.transfer_ci_high:.3f}]{versus} "
        f"(chance {row.chance:.3f}, shuffled-label control {row.control:.3f})"
    )


def summarize_drift(report: ReportSettings, **activations: ActivationCache) -> pd.DataFrame:
    """Cosine and linear CKA of every variant's residual stream against ``report.reference``,
    with intervals: tidy (variant, site, layer, metric, value, ci_low, ci_high, stderr)."""
    return drift_table(by_namespace(activations, "activations"), reference=report.reference, settings=report)


def summarize_cnst(
    two_hop_prompts: pd.DataFrame, report: ReportSettings, **activations: ActivationCache
) -> pd.DataFrame:
    caches = by_namespace(activations, "activations")
    return cnst_summary(caches, two_hop_prompts, reference=report.reference, settings=report)


def summarize_entrec(report: ReportSettings, **entrec_tables: pd.DataFrame) -> pd.DataFrame:
    return entrec_summary(by_namespace(entrec_tables, "entrec"), reference=report.reference, settings=report)


def summarize_attribution(probe: ProbeSettings, report: ReportSettings, **scores: AttributionScores) -> pd.DataFrame:
    """Per-layer neuron and component attribution against ``report.reference``, with
    intervals over the attributed prompts: tidy (variant, layer, metric, value, ...)."""
    return attribution_table(
        by_namespace(scores, "attribution"), reference=report.reference, top_k=probe.attribution.top_k, settings=report
    )
