"""Nodes of the evaluate pipeline: how much factual knowledge each variant still recalls."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd

from fkr_kedro.analysis.recall import evaluate_one_hop, evaluate_two_hop, summarize_recall
from fkr_kedro.modeling.load import CausalLM
from fkr_kedro.quantization.footprint import footprint
from fkr_kedro.quantization.variants import VariantSpec

log = logging.getLogger(__name__)


def evaluate_recall(
    model: CausalLM, one_hop_prompts: pd.DataFrame, two_hop_prompts: pd.DataFrame, evaluate: dict
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Per-fact and per-chain scores, and the headline metrics with throughput."""
    batch_size = int(evaluate.get("batch_size", 256))
    max_new = evaluate.get("max_new_tokens")  # None: the longest answer's tokens plus one
    start = time.perf_counter()
    one_hop = evaluate_one_hop(model.model, model.tokenizer, one_hop_prompts, batch_size, progress=True, max_new_tokens=max_new)
    two_hop = evaluate_two_hop(model.model, model.tokenizer, two_hop_prompts, batch_size, progress=True, max_new_tokens=max_new)
    seconds = time.perf_counter() - start
    metrics = summarize_recall(one_hop, two_hop, two_hop_prompts)
    metrics["eval.seconds"] = seconds
    metrics["eval.prompts_per_second"] = (len(one_hop) + len(two_hop)) / seconds
    return one_hop, two_hop, metrics


def measure_footprint(model_dir: Path) -> dict:
    return footprint(model_dir).as_dict()


def tabulate_variants(specs: list[VariantSpec], *metrics_and_footprints: dict) -> pd.DataFrame:
    """One tidy table: a row per variant and metric (relation-level metrics keep their
    relation in its own column), with the variant's method, bits and group size."""
    rows = []
    for spec, metrics, size in zip(specs, metrics_and_footprints[::2], metrics_and_footprints[1::2]):
        for key, value in {**metrics, **size}.items():
            relation = key.removeprefix("one_hop.accuracy.") if key.startswith("one_hop.accuracy.") else None
            rows.append(
                {
                    "variant": spec.name,
                    "method": spec.method,
                    "bits": spec.bits,
                    "group_size": spec.group_size,
                    "calibration_size": spec.calibration_size,
                    "metric": "one_hop.accuracy" if relation else key,
                    "relation": relation,
                    "value": float(value),
                }
            )
    table = pd.DataFrame(rows)
    headline = table[table["relation"].isna()].pivot(index="variant", columns="metric", values="value")
    # Narrow enough for Kedro's log lines: variant, one-hop recall, held-out two-hop, bits.
    lines = [f"{'variant':<13}{'1-hop':>8}{'2-hop':>8}{'bits':>7}"]
    for spec in specs:
        row = headline.loc[spec.name]
        lines.append(
            f"{spec.name:<13}{row['one_hop.accuracy']:>8.2%}"
            f"{row['two_hop.held_out.accuracy']:>8.2%}{row['effective_bits']:>7.2f}"
        )
    log.info(
        "Recall by variant (1-hop: one-hop recall; 2-hop: held-out latent composition; bits: "
        "effective bits per weight; every metric is in the recall_by_variant table):\n%s", "\n".join(lines),
    )
    return table
