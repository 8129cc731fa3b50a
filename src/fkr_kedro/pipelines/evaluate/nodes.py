"""Nodes of the evaluate pipeline: how much factual knowledge each variant still recalls."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from fkr_kedro.analysis.knowledge_bits import footprint_denominators, measure_knowledge_bits
from fkr_kedro.analysis.recall import measure_recall
from fkr_kedro.analysis.summaries import recall_lines, recall_table
from fkr_kedro.modeling.load import CausalLM
from fkr_kedro.parameters import EvaluateSettings
from fkr_kedro.pipelines.wiring import by_namespace
from fkr_kedro.quantization.footprint import footprint
from fkr_kedro.quantization.variants import VariantSpec

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


def tabulate_variants(specs: list[VariantSpec], **metrics_and_footprints: dict) -> pd.DataFrame:
    """One tidy table of every variant's ``recall_metrics``, ``knowledge_bits`` and ``footprint``."""
    recall = by_namespace(metrics_and_footprints, "recall_metrics")
    bits = by_namespace(metrics_and_footprints, "knowledge_bits")
    table = recall_table(
        specs, {name: {**m, **bits.get(name, {})} for name, m in recall.items()},
        by_namespace(metrics_and_footprints, "footprint"),
    )
    log.info(
        "Recall by variant (1-hop: one-hop recall; 2-hop: held-out latent composition; bits: "
        "effective bits per weight; every metric is in the recall_by_variant table):\n%s", "\n".join(recall_lines(table)),
    )
    return table
