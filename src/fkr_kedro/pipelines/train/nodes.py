"""Nodes of the train pipeline: a small Llama trained from scratch on the world's corpus."""

from __future__ import annotations

import logging

import pandas as pd
import torch

from fkr_kedro.analysis.recall import evaluate_one_hop, evaluate_two_hop, summarize_recall
from fkr_kedro.modeling.load import CausalLM
from fkr_kedro.modeling.tokenizer import build_word_tokenizer
from fkr_kedro.modeling.train import ModelShape, TrainConfig, non_embedding_parameters, train_causal_lm

log = logging.getLogger(__name__)


def train_model(train_corpus: str, model_shape: ModelShape, training: TrainConfig) -> tuple[CausalLM, pd.DataFrame]:
    statements = train_corpus.splitlines()
    tokenizer = build_word_tokenizer(statements)
    model, history = train_causal_lm(statements, tokenizer, model_shape, training)
    return CausalLM(model=model, tokenizer=tokenizer), pd.DataFrame(history)


def measure_trained_model(
    base_model: CausalLM,
    one_hop_prompts: pd.DataFrame,
    two_hop_prompts: pd.DataFrame,
    world_summary: dict,
    training_history: pd.DataFrame,
) -> dict:
    """Recall of the trained model and its knowledge load per non-embedding parameter."""
    model, tokenizer = base_model.model, base_model.tokenizer
    one_hop = evaluate_one_hop(model, tokenizer, one_hop_prompts)
    two_hop = evaluate_two_hop(model, tokenizer, two_hop_prompts)
    metrics = summarize_recall(one_hop, two_hop, two_hop_prompts)
    params = non_embedding_parameters(model)
    metrics.update(
        {
            "non_embedding_parameters": params,
            "knowledge_bits": world_summary["knowledge_bits"],
            "knowledge_bits_per_parameter": world_summary["knowledge_bits"] / params,
            "train.final_loss": float(training_history["loss"].iloc[-1]),
            "train.seconds": float(training_history["seconds"].iloc[-1]),
            "torch_threads": torch.get_num_threads(),
        }
    )
    log.info(
        "Trained model: %d non-embedding parameters, %.3f bits of knowledge per parameter, trained in %.0f s",
        params, metrics["knowledge_bits_per_parameter"], metrics["train.seconds"],
    )
    log.info("One-hop recall (greedy, whole name): %.2f%%", 100 * metrics["one_hop.accuracy"])
    for split in ("seen", "held_out"):
        log.info(
            "Two-hop composition r2(r1(e1)), %s chains: %.2f%% (chance %.2f%%)",
            split, 100 * metrics[f"two_hop.{split}.accuracy"], 100 * metrics[f"two_hop.{split}.chance"],
        )
    return metrics
