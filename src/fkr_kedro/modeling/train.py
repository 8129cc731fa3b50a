"""Train a small Llama-architecture causal LM from scratch on a list of statements.

One loop you can read top to bottom (in the spirit of nanoGPT): the corpus is tokenized
once into a padded tensor, each step draws a seeded random batch of statements, the loss
is next-token cross-entropy over each statement and its end-of-sequence token, AdamW with
linear warm-up and cosine decay. Deterministic on CPU for a given seed and thread count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection

import torch
from pydantic import (
    ConfigDict,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
)
from pydantic.dataclasses import dataclass as pydantic_dataclass
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ModelShape:
    """The Llama trained from scratch (``model_shape`` in parameters_train.yml)."""

    hidden_size: PositiveInt = 64
    num_layers: PositiveInt = 4
    num_heads: PositiveInt = 4
    intermediate_size: PositiveInt = 256
    max_position_embeddings: PositiveInt = 64

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class TrainConfig:
    """The training loop (``training`` in parameters_train.yml)."""

    steps: PositiveInt = 11000
    batch_size: PositiveInt = 128
    learning_rate: PositiveFloat = 3e-3
    warmup_steps: NonNegativeInt = 200
    weight_decay: NonNegativeFloat = 0.1
    seed: int = 0
    log_every: PositiveInt = 100


def llama_config(shape: ModelShape, tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_heads,
        max_position_embeddings=shape.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def non_embedding_parameters(model: torch.nn.Module) -> int:
    """Parameters outside the input embedding and the unembedding (lm_head), each tensor
    counted once: with tied embeddings (Gemma, SmolLM2) the two are one tensor, which
    ``parameters()`` yields once and which is subtracted once."""
    heads = [model.get_input_embeddings(), model.get_output_embeddings()]
    embeddings = {id(m.weight): m.weight.numel() for m in heads if m is not None}
    return sum(p.numel() for p in model.parameters()) - sum(embeddings.values())


def tokenize_corpus(corpus: list[str], tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    """Right-padded ``[n, max_len]`` ids: BOS, the statement, EOS, then padding."""
    ids = [tokenizer(text)["input_ids"] + [tokenizer.eos_token_id] for text in corpus]
    width = max(map(len, ids))
    out = torch.full((len(ids), width), tokenizer.pad_token_id, dtype=torch.long)
    for i, row in enumerate(ids):
        out[i, : len(row)] = torch.tensor(row)
    return out


def train_causal_lm(
    corpus: list[str],
    tokenizer: PreTrainedTokenizerBase,
    shape: ModelShape,
    config: TrainConfig,
    progress: bool = True,
    checkpoint: Callable[[int, LlamaForCausalLM], None] | None = None,
    checkpoint_steps: Collection[int] = (),
) -> tuple[LlamaForCausalLM, list[dict]]:
    """Train from scratch; return the model (eval mode) and the loss history.
    ``checkpoint(step, model)`` is called after each optimizer step whose count (1-based)
    is in ``checkpoint_steps`` (e.g. to save the model there); it must not change the model."""
    torch.manual_seed(config.seed)
    data = tokenize_corpus(corpus, tokenizer)
    if data.shape[1] > shape.max_position_embeddings:
        raise ValueError(
            f"the longest statement has {data.shape[1]} tokens, more than "
            f"max_position_embeddings={shape.max_position_embeddings}: raise it"
        )
    model = LlamaForCausalLM(llama_config(shape, tokenizer))
    model.train()

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate,
        betas=(0.9, 0.98),
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, config))
    generator = torch.Generator().manual_seed(config.seed)

    history: list[dict] = []
    start = time.perf_counter()
    bar = tqdm(range(config.steps), desc="train", disable=not progress, mininterval=2.0)
    running = None
    for step in bar:
        batch = data[torch.randint(len(data), (config.batch_size,), generator=generator)]
        width = int((batch != tokenizer.pad_token_id).sum(1).max())
        batch = batch[:, :width]
        labels = batch.masked_fill(batch == tokenizer.pad_token_id, -100)
        loss = model(input_ids=batch, attention_mask=(labels != -100).long(), labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if checkpoint is not None and step + 1 in checkpoint_steps:
            checkpoint(step + 1, model)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % config.log_every == 0 or step == config.steps - 1:
            bar.set_postfix(loss=f"{running:.3f}")
            history.append({"step": step, "loss": running, "seconds": time.perf_counter() - start})
    model.eval()
    return model, history


def _lr_factor(step: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
