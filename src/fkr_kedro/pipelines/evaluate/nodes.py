"""Nodes of the evaluate pipeline: how much factual knowledge each variant still recalls."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from fkr_kedro.analysis.knowledge_bits import footprint_denominators, measure_knowledge_bits
from fkr_kedro.analysis.comparisons import (
    check_same_prompts, headline_lines, prompt_outcomes, recall_table, variant_comparisons,
)
from fkr_kedro.analysis.recall import measure_recall, prompt_values
from fkr_kedro.modeling.load import CausalLM
from fkr_kedro.parameters import EvaluateSettings
from fkr_kedro.pipelines.wiring import by_namespace
from fkr_kedro.quantization.footprint import footprint
from fkr_kedro.quantization.variants import VariantSpec
from fkr_kedro.reporting.findings import ReportSettings

log = logging.getLogger(__name__)


def evaluate_recall(
    model: CausalLM, one_hop_prompts: pd.DataFrame, two_hop_prompts: pd.DataFrame, evaluate: EvaluateSettings
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Per-fact and per-chain scores, and the headline metrics with throughput."""
    result = measure_recall(
        model.model, model.tokenizer, one_hop_prompts, two_hop_prompts, evaluate.batch_size,
        max_new_tokens=evaluate.max_new_tokens, progress=True, mode=evaluate.mode,
    )
    return result.one_hop, result.two_hop, result.metrics


def measure_footprint(model_dir: Path) -> dict:
    return footprint(model_dir).as_dict()


def estimate_knowledge_bits(
    model: CausalLM, one_hop_facts: pd.DataFrame, footprint: dict, evaluate: EvaluateSettings
) -> dict:
    """Stored bits over every one-hop fact (Physics of LMs 3.3's estimator), per relation and
    in total, per non-embedding weight and per stored weight bit; {} without one-hop facts."""
    if one_hop_facts.empty:
        log.info("No one-hop facts in this study: no knowledge-bits estimate")
        return {}
    parameters, weight_bits = footprint_denominators(footprint)
    result = measure_knowledge_bits(
        model.model, model.tokenizer, one_hop_facts, parameters, weight_bits, evaluate.batch_size
    )
    metrics = result.metrics()
    log.info(
        "Knowledge bits: %.0f of %.0f bits stored (%.3f bits per weight, %.4f per stored weight bit)",
        metrics["stored_bits"], metrics["knowledge_load_bits"], metrics["stored_bits_per_param"],
        metrics["stored_bits_per_weight_bit"],
    )
    return metrics


def tabulate_variants(
    specs: list[VariantSpec], report: ReportSettings, **inputs: dict | pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """One tidy table of every variant's ``recall_metrics``, ``knowledge_bits`` and
    ``footprint`` with intervals and paired tests against ``report.reference`` (from the
    per-prompt ``one_hop_scores`` and ``two_hop_scores``), the paired comparisons of the
    variants that share a bit width, and every variant's outcome on every prompt of the
    headline metrics."""
    one_hop, two_hop = by_namespace(inputs, "one_hop_scores"), by_namespace(inputs, "two_hop_scores")
    check_same_prompts(one_hop, ["relation", "subject", "object"], "one-hop score")
    check_same_prompts(two_hop, ["composition", "e1", "e2", "e3", "split", "readout"], "two-hop score")
    values = {name: prompt_values(one_hop[name], two_hop[name]) for name in one_hop}
    names = [spec.name for spec in specs]
    if report.reference not in names:
        log.warning(
            "report.reference %r is not among the variants %s: recall_by_variant has no comparison columns; "
            "add the variant or set report.reference to one of them", report.reference, names,
        )
    recall = by_namespace(inputs, "recall_metrics")
    bits = by_namespace(inputs, "knowledge_bits")
    table = recall_table(
        specs, {name: {**m, **bits.get(name, {})} for name, m in recall.items()},
        by_namespace(inputs, "footprint"), values, report.reference, report,
    )
    pairs = variant_comparisons(specs, values, report)
    log.info(
        "Recall by variant (1-hop: one-hop recall; 2-hop: held-out latent composition, each with its 95%% interval "
        "over prompts and its change against %s by a Holm-adjusted paired test at alpha %g; bits: effective bits per "
        "weight; every metric is in recall_by_variant.csv, every same-bits pair in variant_comparisons.csv):\n%s",
        report.reference, report.alpha, "\n".join(headline_lines(table)),
    )
    return table, pairs, prompt_outcomes(specs, values)
