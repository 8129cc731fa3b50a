"""Training-loop throughput: steps/s, tokens/s and achieved GFLOP/s against the machine's
fp32 matmul peak, measured in the same run, for each loop (``hf``: the transformers forward
with attention mask and labels, the default; ``packed``: the option), 1 and 2 torch
threads, with nothing else started ("idle") and under a one-core load (a busy
``yes > /dev/null`` this script starts and stops).

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/train_throughput.py [--steps 40]
        [--loops hf,packed] [--threads 1,2] [--loads idle,busy] [--batch-size 128]

The corpus is the default world's (``WorldConfig()``), the model the default shape
(``ModelShape()``). Achieved GFLOP/s counts the useful work only: 6 x (non-embedding
parameters + unembedding) x predicted tokens, plus attention's products, so padding does not
count. The peak is a 1024 x 1024 fp32 matmul with the same threads under the same load.
Absolute figures follow the machine's load (printed); compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time

import torch

from fkr_kedro.knowledge.world import WorldConfig, generate_world
from fkr_kedro.modeling.tokenizer import build_word_tokenizer
from fkr_kedro.modeling.train import (
    ModelShape,
    hf_causal_lm_loss,
    llama_config,
    non_embedding_parameters,
    packed_causal_lm_loss,
    tokenize_corpus,
)
from transformers import LlamaForCausalLM

LOSSES = {"hf": hf_causal_lm_loss, "packed": packed_causal_lm_loss}


def matmul_peak(seconds: float = 1.5, n: int = 1024) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start, k = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        a @ b
        k += 1
    return 2 * n**3 * k / (time.perf_counter() - start) / 1e9


def measure(loop: str, data: torch.Tensor, tok, shape: ModelShape, batch_size: int, steps: int) -> dict:
    torch.manual_seed(0)
    model = LlamaForCausalLM(llama_config(shape, tok))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.98))
    generator = torch.Generator().manual_seed(0)
    batches = [data[torch.randint(len(data), (batch_size,), generator=generator)] for _ in range(steps + 5)]
    loss_fn = LOSSES[loop]

    def step(batch):
        loss = loss_fn(model, batch, tok.pad_token_id)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    for batch in batches[:5]:
        step(batch)
    start = time.perf_counter()
    for batch in batches[5:]:
        step(batch)
    seconds = time.perf_counter() - start
    real = sum(int((b != tok.pad_token_id).sum()) for b in batches[5:])
    predicted = real - batch_size * steps  # each statement predicts all its tokens but the first
    width = shape.hidden_size
    per_token = 6 * (non_embedding_parameters(model) + len(tok) * width)
    # Attention's two products (scores, weighted values) per layer: ~2 x 2 x T x width a token
    # forward, x3 with the backward; T ~ the mean statement length.
    mean_len = real / (batch_size * steps)
    per_token += 3 * 4 * mean_len * width * shape.num_layers
    return {
        "steps_per_s": steps / seconds,
        "tokens_per_s": real / seconds,
        "gflops": per_token * predicted / seconds / 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--loops", default="hf,packed")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--loads", default="idle,busy")
    args = parser.parse_args()
    world = generate_world(WorldConfig())
    statements = world.corpus()
    tok = build_word_tokenizer(statements)
    data = tokenize_corpus(statements, tok)
    shape = ModelShape()
    print(f"{len(statements)} statements, vocabulary {len(tok)}, batch {args.batch_size}, {args.steps} steps a run; "
          f"{os.cpu_count()} cores, load average {os.getloadavg()}")
    rows = []
    for load in args.loads.split(","):
        busy = subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) if load == "busy" else None
        try:
            for threads in map(int, args.threads.split(",")):
                torch.set_num_threads(threads)
                peak = matmul_peak()
                for loop in args.loops.split(","):
                    r = measure(loop, data, tok, shape, args.batch_size, args.steps)
                    rows.append({"load": load, "threads": threads, "loop": loop, **r, "peak": peak})
                    print(f"{load:5s} {threads} thread(s) {loop:7s}: {r['steps_per_s']:6.2f} steps/s "
                          f"{r['tokens_per_s']:8.0f} tokens/s {r['gflops']:6.2f} GFLOP/s = "
                          f"{r['gflops'] / peak:5.1%} of the {peak:.1f} GFLOP/s matmul peak", flush=True)
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
    print(f"load average {os.getloadavg()}")
    by = {(r["load"], r["threads"], r["loop"]): r["steps_per_s"] for r in rows}
    for load, threads, loop in by:
        if loop == "packed" and (load, threads, "hf") in by:
            print(f"packed / hf, {load}, {threads} thread(s): {by[(load, threads, 'packed')] / by[(load, threads, 'hf')]:.2f}x")
        if threads == 2 and (load, 1, loop) in by:
            print(f"2 / 1 threads, {load}, {loop}: {by[(load, 2, loop)] / by[(load, 1, loop)]:.2f}x")
        if load == "busy" and ("idle", threads, loop) in by:
            print(f"busy / idle, {threads} thread(s), {loop}: {by[('busy', threads, loop)] / by[('idle', threads, loop)]:.2f}x")


if __name__ == "__main__":
    main()
