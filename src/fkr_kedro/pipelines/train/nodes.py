"""Nodes of the train pipeline: the base model. The embedded default trains a small Llama
from scratch on the world's corpus; a real model (``base_model.kind`` dir, hub or gguf) is
not trained: it is loaded (a GGUF dequantized once) and measured the same way."""

from __future__ import annotations

import dataclasses
import logging

import pandas as pd
import torch

from fkr_kedro.analysis.recall import measure_recall
from fkr_kedro.modeling.load import CausalLM, ModelSource
from fkr_kedro.modeling.tokenizer import build_word_tokenizer
from fkr_kedro.modeling.train import (
    ModelShape, TrainConfig, TrainingTime, non_embedding_parameters, train_causal_lm, training_fingerprint,
)
from fkr_kedro.parameters import EvaluateSettings

log = logging.getLogger(__name__)


def train_model(
    train_corpus: str, model_shape: ModelShape, training: TrainConfig, training_time: TrainingTime = TrainingTime(),
    seed: int | None = None,
) -> tuple[CausalLM, pd.DataFrame, dict]:
    """The base model, its training curve and what it was trained from
    (:func:`~fkr_kedro.modeling.train.training_fingerprint`: `kedro submit` skips the shared
    job only when the configured training is the one recorded). ``seed``: a training seed
    other than ``training.seed`` (one of ``training_seeds``)."""
    if seed is not None:
        training = dataclasses.replace(training, seed=seed)
    statements = train_corpus.splitlines()
    tokenizer = build_word_tokenizer(statements)
    model, history = train_causal_lm(statements, tokenizer, model_shape, training, time_bound=training_time)
    fingerprint = training_fingerprint(statements, model_shape, training)
    # The threads that trained it (runtime.threads), beside its seconds: not part of the
    # fingerprint, since one and two threads give the same weights (docs/performance.md).
    history = pd.DataFrame(history).assign(torch_threads=torch.get_num_threads())
    return CausalLM(model=model, tokenizer=tokenizer), history, fingerprint


def measure_trained_model(
    base_model: CausalLM,
    one_hop_prompts: pd.DataFrame,
    two_hop_prompts: pd.DataFrame,
    world_summary: dict,
    training_history: pd.DataFrame,
    evaluate: EvaluateSettings,
) -> dict:
    """Recall of the trained model and its knowledge load per non-embedding parameter."""
    model, tokenizer = base_model.model, base_model.tokenizer
    metrics = measure_recall(
        model, tokenizer, one_hop_prompts, two_hop_prompts, evaluate.batch_size, max_new_tokens=evaluate.max_new_tokens,
        mode=evaluate.mode,
    ).metrics
    params = non_embedding_parameters(model)
    # The knowledge load is known exactly for the synthetic world and the world facts only.
    bits = world_summary.get("knowledge_bits", float("nan"))
    if "torch_threads" in training_history:  # histories written before it was recorded lack it
        metrics["train.torch_threads"] = int(training_history["torch_threads"].iloc[-1])
    metrics.update(
        {
            "non_embedding_parameters": params,
            "knowledge_bits": bits,
            "knowledge_bits_per_parameter": bits / params,
            "train.final_loss": float(training_history["loss"].iloc[-1]),
            "train.seconds": float(training_history["seconds"].iloc[-1]),
            "torch_threads": torch.get_num_threads(),  # this node's (the measurement's)
        }
    )
    log.info(
        "Trained model: %d non-embedding parameters, %.3f bits of knowledge per parameter, trained in %.0f s",
        params, metrics["knowledge_bits_per_parameter"], metrics["train.seconds"],
    )
    log.info("One-hop recall (greedy, whole name): %.2f%%", 100 * metrics["one_hop.accuracy"])
    for split in [s for s in ("seen", "held_out") if f"two_hop.{s}.accuracy" in metrics]:
        log.info(
            "Two-hop composition r2(r1(e1)), %s chains: %.2f%% (chance %.2f%%)",
            split, 100 * metrics[f"two_hop.{split}.accuracy"], 100 * metrics[f"two_hop.{split}.chance"],
        )
    return metrics


def prepare_base_model(base_model: ModelSource) -> ModelSource:
    """The source the base model dataset materializes (see ModelSourceDataset)."""
    log.info("Base model: %s (%s), not trained here", base_model.label(), base_model.kind)
    return base_model


def measure_loaded_model(
    base_model: CausalLM,
    one_hop_prompts: pd.DataFrame,
    two_hop_prompts: pd.DataFrame,
    source: ModelSource,
    evaluate: EvaluateSettings,
) -> tuple[dict, pd.DataFrame]:
    """Recall of a loaded (not trained) base model on the evaluation prompts, overall and per
    relation, next to what the reference is; and the per-relation table."""
    model, tokenizer = base_model.model, base_model.tokenizer
    result = measure_recall(
        model, tokenizer, one_hop_prompts, two_hop_prompts, evaluate.batch_size,
        max_new_tokens=evaluate.max_new_tokens, progress=True, mode=evaluate.mode,
    )
    metrics = result.metrics
    metrics.update(
        {
            "non_embedding_parameters": non_embedding_parameters(model),
            "parameters": sum(p.numel() for p in model.parameters()),
            "torch_threads": torch.get_num_threads(),
        }
    )
    per_relation = (
        result.one_hop.groupby("relation")["correct"].agg(facts="size", recalled="sum", accuracy="mean").reset_index()
        .assign(model=source.label(), reference=source.description or source.label())
    )
    log.info(
        "Base model %s (%s): one-hop recall %.2f%%; per relation:\n%s",
        source.label(), source.description or source.kind, 100 * metrics["one_hop.accuracy"],
        per_relation[["relation", "facts", "recalled", "accuracy"]].to_string(index=False),
    )
    return metrics, per_relation
