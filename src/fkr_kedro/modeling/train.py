"""Train a small Llama-architecture causal LM from scratch on a list of statements.

One loop you can read top to bottom (in the spirit of nanoGPT): the corpus is tokenized
once into a padded tensor, each step draws a seeded random batch of statements, the loss
is next-token cross-entropy over each statement and its end-of-sequence token (or, with
``TrainConfig.loss_starts_after``, over what follows a separator only), AdamW with linear
warm-up and cosine decay. Deterministic on CPU for a given seed and thread count.

The forward pass of a step (``TrainConfig.loop``): ``packed`` computes the
same loss as ``LlamaForCausalLM(input_ids, attention_mask, labels)`` with the model's own
parameters, but on the batch's real tokens only (no padding rows in the matrix products),
with fused q/k/v and gate/up products and a plain causal attention over the (short)
statements; ``hf`` (the default) calls the transformers model. Either way the model trained is
a standard ``LlamaForCausalLM`` and saves as one. docs/performance.md has the measurements.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict
from typing import Literal

import torch
import torch.nn.functional as F
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

log = logging.getLogger(__name__)


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
    # hf: the transformers forward with attention mask and labels. packed: the same loss on
    # real tokens only with fused products, 1.05-1.24x faster on an idle CPU and slower beside
    # a busy core; its final metrics over three seeds are indistinguishable from hf's
    # (docs/results_performance.md, "The training-speed decision"), so hf stays the default
    # for the documented figures' sake.
    loop: Literal["packed", "hf"] = "hf"
    # A completion-only loss: in a statement that contains this text, no token up to and
    # including its first occurrence is a target (the context is read, not learned);
    # statements without it are trained on every token. None: every token of every statement.
    loss_starts_after: str | None = None


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class TrainingTime:
    """When a training run warns that it will be long (``training_time`` in
    parameters_train.yml). Kept apart from :class:`TrainConfig`: it changes no model, so it is
    not part of what trained models are fingerprinted by."""

    # Warn once when the estimated training time exceeds this; None: never.
    warn_after_minutes: PositiveFloat | None = 60.0
    # Steps timed for the estimate, after the first (which includes one-off set-up).
    estimate_after_steps: PositiveInt = 20


class _TimeEstimate:
    """Times steps 2 to ``estimate_after_steps + 1`` and warns once if ``steps`` of them would
    take longer than the bound."""

    def __init__(self, steps: int, bound: TrainingTime):
        self.steps, self.bound = steps, bound
        self.started: float | None = None
        self.done = bound.warn_after_minutes is None or steps <= bound.estimate_after_steps + 1

    def after_step(self, step: int) -> None:
        """Called after each step (0-based ``step``)."""
        if self.done:
            return
        if step == 0:
            self.started = time.perf_counter()
            return
        if step < self.bound.estimate_after_steps:
            return
        self.done = True
        per_step = (time.perf_counter() - self.started) / step
        estimate = per_step * self.steps
        if estimate > self.bound.warn_after_minutes * 60:
            log.warning(
                "training.steps=%d will take about %s (%.3g s per step over %d steps), more than "
                "training_time.warn_after_minutes=%g: stop it (Ctrl-C) and lower training.steps, or raise "
                "the bound if this is intended",
                self.steps, _duration(estimate), per_step, step, self.bound.warn_after_minutes,
                extra={"estimate_seconds": estimate, "seconds_per_step": per_step},
            )


def _duration(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.1f} minutes"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 86400:,.0f} days"


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


def training_fingerprint(corpus: Sequence[str], shape: ModelShape, training: TrainConfig) -> dict:
    """Everything that determines a model trained from scratch: its shape, training settings
    and corpus (as JSON would hold it). Recorded with every trained model; a model is kept
    (scaling, capacity) or its job skipped (`kedro submit`) only when it is the same."""
    return json.loads(json.dumps({
        "shape": asdict(shape),
        "training": asdict(training),
        "corpus_sha256": hashlib.sha256("\n".join(corpus).encode()).hexdigest(),
    }))


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


def loss_start_positions(
    corpus: list[str], data: torch.Tensor, tokenizer: PreTrainedTokenizerBase, separator: str
) -> torch.Tensor:
    """For each statement, the position in its row of ``data`` (:func:`tokenize_corpus`) of
    the first token after ``separator`` (0 where the statement does not contain it): targets
    before it carry no loss. The context is tokenized alone, trailing whitespace stripped (a
    BPE tokenizer joins the space to the next word), and must be a prefix of the row."""
    starts = []
    for text, row in zip(corpus, data):
        at = text.find(separator)
        if at < 0:
            starts.append(0)
            continue
        context = tokenizer(text[: at + len(separator)].rstrip())["input_ids"]
        if row[: len(context)].tolist() != context:
            raise ValueError(
                f"training.loss_starts_after={separator!r}: the tokenizer does not split {text!r} at it "
                "(its context tokenizes differently alone): choose a separator the tokenizer keeps whole"
            )
        starts.append(len(context))
    if not any(starts):
        raise ValueError(
            f"training.loss_starts_after={separator!r} occurs in no training statement, so every token would "
            "be trained on: unset it (null) or correct the separator"
        )
    return torch.tensor(starts, dtype=torch.long)


def train_causal_lm(
    corpus: list[str],
    tokenizer: PreTrainedTokenizerBase,
    shape: ModelShape,
    config: TrainConfig,
    progress: bool = True,
    checkpoint: Callable[[int, LlamaForCausalLM], None] | None = None,
    checkpoint_steps: Collection[int] = (),
    time_bound: TrainingTime = TrainingTime(),
) -> tuple[LlamaForCausalLM, list[dict]]:
    """Train from scratch; return the model (eval mode) and the loss history.
    ``checkpoint(step, model)`` is called after each optimizer step whose count (1-based)
    is in ``checkpoint_steps`` (e.g. to save the model there); it must not change the model.
    A run estimated to take longer than ``time_bound`` warns once, early (:class:`TrainingTime`)."""
    torch.manual_seed(config.seed)
    data = tokenize_corpus(corpus, tokenizer)
    if data.shape[1] > shape.max_position_embeddings:
        raise ValueError(
            f"the longest statement has {data.shape[1]} tokens, more than "
            f"max_position_embeddings={shape.max_position_embeddings}: raise it"
        )
    loss_from = None
    if config.loss_starts_after is not None:
        loss_from = loss_start_positions(corpus, data, tokenizer, config.loss_starts_after)
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

    if config.loop == "packed":
        check_packed_support(model.config)
    history: list[dict] = []
    start = time.perf_counter()
    bar = tqdm(range(config.steps), desc="train", disable=not progress, mininterval=2.0)
    running = None
    estimate = _TimeEstimate(config.steps, time_bound)
    for step in bar:
        rows = torch.randint(len(data), (config.batch_size,), generator=generator)
        batch, batch_loss_from = data[rows], None if loss_from is None else loss_from[rows]
        if config.loop == "packed":
            loss = packed_causal_lm_loss(model, batch, tokenizer.pad_token_id, batch_loss_from)
        else:
            loss = hf_causal_lm_loss(model, batch, tokenizer.pad_token_id, batch_loss_from)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        # The step has ended: the model holds the weights after ``step + 1`` updates.
        estimate.after_step(step)
        if checkpoint is not None and step + 1 in checkpoint_steps:
            checkpoint(step + 1, model)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % config.log_every == 0 or step == config.steps - 1:
            bar.set_postfix(loss=f"{running:.3f}")
            history.append({"step": step, "loss": running, "seconds": time.perf_counter() - start})
    model.eval()
    return model, history


def hf_causal_lm_loss(
    model: LlamaForCausalLM, batch: torch.Tensor, pad_id: int, loss_from: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean next-token cross-entropy of right-padded statements, through the transformers
    forward (attention mask and labels). ``loss_from[i]``: row i's first position that is a
    target (:func:`loss_start_positions`); None: every real token after the first."""
    width = int((batch != pad_id).sum(1).max())
    batch = batch[:, :width]
    labels = batch.masked_fill(batch == pad_id, -100)
    attention_mask = (labels != -100).long()
    if loss_from is not None:
        labels = labels.masked_fill(torch.arange(width)[None] < loss_from[:, None], -100)
    return model(input_ids=batch, attention_mask=attention_mask, labels=labels).loss


def check_packed_support(config: LlamaConfig) -> None:
    """The packed forward implements the plain Llama block only; say so early otherwise."""
    unsupported = {
        "attention_bias": config.attention_bias,
        "mlp_bias": config.mlp_bias,
        "grouped-query attention": config.num_key_value_heads != config.num_attention_heads,
        f"hidden_act {config.hidden_act!r}": config.hidden_act != "silu",
        f"rope_type {config.rope_parameters.get('rope_type')!r}": config.rope_parameters.get("rope_type") != "default",
        "pretraining_tp": config.pretraining_tp != 1,
    }
    found = [name for name, bad in unsupported.items() if bad]
    if found:
        raise ValueError(f"training.loop=packed does not support {', '.join(found)}: use training.loop=hf")


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def packed_causal_lm_loss(
    model: LlamaForCausalLM, batch: torch.Tensor, pad_id: int, loss_from: torch.Tensor | None = None
) -> torch.Tensor:
    """The loss of :func:`hf_causal_lm_loss`, computed from the model's own parameters on the
    batch's real tokens only.

    Every product except attention acts token by token, so it runs on the ``N`` real tokens
    of the batch (no padding); only attention goes back to the padded ``[B, T]`` grid, where
    right padding never reaches a real token under the causal mask. The q/k/v and gate/up
    weights are concatenated into one product each (gradients flow back to the separate
    weights, so the checkpoint stays a standard Llama)."""
    core, cfg = model.model, model.config
    heads = cfg.num_attention_heads
    head_dim = cfg.hidden_size // heads
    real = batch != pad_id
    width = int(real.sum(1).max())
    batch, real = batch[:, :width], real[:, :width]
    rows = batch.shape[0]
    flat = real.reshape(-1).nonzero().squeeze(1)  # grid index of each real token
    x = core.embed_tokens(batch.reshape(-1)[flat])  # [N, C]
    positions = torch.arange(width)
    cos, sin = core.rotary_emb(x[None], positions[None])  # [1, T, D]
    cos, sin = cos[0][flat % width][:, None], sin[0][flat % width][:, None]  # [N, 1, D]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    eps = cfg.rms_norm_eps
    for layer in core.layers:
        att, mlp = layer.self_attn, layer.mlp
        h = F.rms_norm(x, x.shape[-1:], layer.input_layernorm.weight, eps)
        qkv = F.linear(h, torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight]))
        q, k, v = qkv.view(-1, 3, heads, head_dim).unbind(1)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        grid = qkv.new_zeros(rows * width, 3 * cfg.hidden_size).index_copy(0, flat, torch.cat([q, k, v], 1).flatten(1))
        q, k, v = grid.view(rows, width, 3, heads, head_dim).permute(2, 0, 3, 1, 4)  # each [B, H, T, D]
        scores = (q @ k.transpose(-1, -2)) * head_dim**-0.5
        attn = scores.masked_fill(~causal, float("-inf")).softmax(-1) @ v  # [B, H, T, D]
        attn = attn.transpose(1, 2).reshape(rows * width, cfg.hidden_size)[flat]
        x = x + F.linear(attn, att.o_proj.weight)
        h = F.rms_norm(x, x.shape[-1:], layer.post_attention_layernorm.weight, eps)
        gate, up = F.linear(h, torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])).chunk(2, -1)
        x = x + F.linear(F.silu(gate) * up, mlp.down_proj.weight)
    x = F.rms_norm(x, x.shape[-1:], core.norm.weight, eps)
    # Each real token predicts the next one of its statement (right padding: the next grid
    # cell is real exactly when it belongs to the same statement).
    rank = real.reshape(-1).cumsum(0).view(rows, width) - 1  # row of x for each grid cell
    predicts = real[:, 1:]  # the grid cells whose token is a target
    if loss_from is not None:
        predicts = predicts & (torch.arange(1, width)[None] >= loss_from[:, None])
    logits = F.linear(x[rank[:, :-1][predicts]], model.lm_head.weight)
    return F.cross_entropy(logits.float(), batch[:, 1:][predicts])


def _lr_factor(step: int, config: TrainConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
