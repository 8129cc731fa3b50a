"""GPTQ quantization and evaluation of a real model with 1 and 2 torch threads, on an idle
machine and beside one busy core: the measurements behind ``runtime.threads.default: auto``.

    PYTHONPATH=src python benchmarks/threads_real_model.py \\
        --model /work/smol/data/06_models/base \\
        --prompts /work/smol/data/05_model_input/one_hop_prompts.parquet \\
        --corpus /work/smol/data/05_model_input/train_corpus.txt [--limit 256]

``--model`` is a saved model directory (SmolLM2 dequantized by ``kedro run --env=smollm2``),
``--prompts`` a one_hop_prompts.parquet of data_prep, ``--corpus`` the calibration texts (one
per line; the first 128 are used). Each cell runs in a fresh process (threads set before
torch starts its pool); the busy core is a second process spinning in pure Python. Prints the
seconds per cell and the ratio of 1 to 2 threads in each condition. Run it alone: anything
else on the machine changes the "idle" column.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CELL = r"""
import json, sys, time, tempfile
from pathlib import Path
import torch
torch.set_num_threads(int(sys.argv[1]))
stage, model_dir, prompts, corpus, limit = sys.argv[2:7]
if stage == "gptq":
    from fkr_kedro.quantization.api import quantize
    from fkr_kedro.quantization.variants import VariantSpec
    texts = [t for t in Path(corpus).read_text().splitlines() if t.strip()][:128]
    spec = VariantSpec(name="gptq_w4_g32", method="gptq", bits=4, group_size=32)
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        quantize(Path(model_dir), spec, texts, Path(out) / "v")
        print(json.dumps({"seconds": time.perf_counter() - start}))
else:
    import pandas as pd
    from fkr_kedro.analysis.recall import evaluate_one_hop
    from fkr_kedro.modeling.load import load_causal_lm
    lm = load_causal_lm(Path(model_dir))
    one_hop = pd.read_parquet(prompts).head(int(limit))
    evaluate_one_hop(lm.model, lm.tokenizer, one_hop.head(16), batch_size=64, mode="teacher_forced")  # warm-up
    start = time.perf_counter()
    evaluate_one_hop(lm.model, lm.tokenizer, one_hop, batch_size=64, mode="teacher_forced")
    print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def run_cell(threads: int, stage: str, args) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GPTQMODEL_CPU_WORKERS": "2"}
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(CELL)
    out = subprocess.run(
        [sys.executable, f.name, str(threads), stage, args.model, args.prompts, args.corpus, str(args.limit)],
        env=env, capture_output=True, text=True,
    )
    os.unlink(f.name)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompts", required=True)
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--limit", type=int, default=256, help="one-hop prompts evaluated")
    parser.add_argument("--stages", default="gptq,evaluate")
    args = parser.parse_args()
    print(f"cores {os.cpu_count()}; load before: {os.getloadavg()}")
    results = {}
    for busy in (False, True):
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            for stage in args.stages.split(","):
                for threads in (1, 2):
                    seconds = run_cell(threads, stage, args)
                    results[(stage, busy, threads)] = seconds
                    print(f"{stage:9} {'one busy core' if busy else 'idle':13} {threads} thread(s): {seconds:7.1f} s",
                          flush=True)
        finally:
            if spinner is not None:
                spinner.kill()
    print("\n| stage | condition | 1 thread (s) | 2 threads (s) | 1 / 2 |\n|---|---|---|---|---|")
    for stage in args.stages.split(","):
        for busy in (False, True):
            one, two = results[(stage, busy, 1)], results[(stage, busy, 2)]
            print(f"| {stage} | {'one busy core' if busy else 'idle'} | {one:.1f} | {two:.1f} | {one / two:.2f} |")


if __name__ == "__main__":
    main()
