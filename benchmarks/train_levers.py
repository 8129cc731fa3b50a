"""Training-step levers beyond the `packed` loop: bf16 autocast and ``torch.compile``.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/train_levers.py [--steps 120]

A plain fixed-grid forward (``[batch, longest statement]``, SDPA causal attention, the
model's own parameters, so the checkpoint stays a standard Llama) on the default world and
shape, one thread, the same batches for each of: fp32 eager, fp32 compiled
(``fullgraph=True, dynamic=False``), bf16 autocast eager, bf16 autocast compiled. Prints the
warm-up time (compilation included), ms per step and the ratio to fp32 eager.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch
import torch.nn.functional as F
from transformers import LlamaForCausalLM

from fkr_kedro.knowledge.world import WorldConfig, generate_world
from fkr_kedro.modeling.tokenizer import build_word_tokenizer
from fkr_kedro.modeling.train import (
    ModelShape,
    _rotate_half,
    llama_config,
    tokenize_corpus,
)


def grid_loss(model: LlamaForCausalLM, batch: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Mean next-token cross-entropy on the padded grid (right padding: causal attention keeps
    pads away from real tokens; pad targets are ignored). Fixed shapes, so it compiles once."""
    core, cfg = model.model, model.config
    heads = cfg.num_attention_heads
    hd = cfg.hidden_size // heads
    B, T = batch.shape
    x = core.embed_tokens(batch)
    cos, sin = core.rotary_emb(x, torch.arange(T)[None])
    cos, sin = cos[:, :, None], sin[:, :, None]
    eps = cfg.rms_norm_eps
    for layer in core.layers:
        att, mlp = layer.self_attn, layer.mlp
        h = F.rms_norm(x, x.shape[-1:], layer.input_layernorm.weight, eps)
        qkv = F.linear(h, torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight]))
        q, k, v = qkv.view(B, T, 3, heads, hd).unbind(2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        x = x + F.linear(a.transpose(1, 2).reshape(B, T, -1), att.o_proj.weight)
        h = F.rms_norm(x, x.shape[-1:], layer.post_attention_layernorm.weight, eps)
        gate, up = F.linear(h, torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])).chunk(2, -1)
        x = x + F.linear(F.silu(gate) * up, mlp.down_proj.weight)
    x = F.rms_norm(x, x.shape[-1:], core.norm.weight, eps)
    logits = F.linear(x[:, :-1], model.lm_head.weight)
    labels = batch[:, 1:].masked_fill(batch[:, 1:] == pad_id, -100)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def measure(tok, shape, batches, bf16: bool, compiled: bool) -> tuple[float, float]:
    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config(shape, tok))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.98))
    loss_fn = torch.compile(grid_loss, fullgraph=True, dynamic=False) if compiled else grid_loss

    def step(batch):
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = loss_fn(model, batch, tok.pad_token_id)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    start = time.perf_counter()
    for batch in batches[:5]:
        step(batch)
    warm_up = time.perf_counter() - start
    start = time.perf_counter()
    for batch in batches[5:]:
        step(batch)
    return warm_up, (time.perf_counter() - start) / (len(batches) - 5) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    statements = generate_world(WorldConfig()).corpus()
    tok = build_word_tokenizer(statements)
    data = tokenize_corpus(statements, tok)
    generator = torch.Generator().manual_seed(0)
    batches = [data[torch.randint(len(data), (args.batch_size,), generator=generator)] for _ in range(args.steps + 5)]
    shape = ModelShape()
    base = None
    for bf16 in (False, True):
        for compiled in (False, True):
            warm_up, ms = measure(tok, shape, batches, bf16, compiled)
            base = base or ms
            print(f"{'bf16 autocast' if bf16 else 'fp32':13s} {'compiled' if compiled else 'eager':8s}: "
                  f"warm-up {warm_up:5.1f} s, {ms:6.1f} ms/step, {base / ms:.2f}x fp32 eager", flush=True)


if __name__ == "__main__":
    main()
