"""The memory-critical stage alone: activation capture of the paper_sim model (conf/paper_sim's
random Qwen2 with SmolLM2's tokenizer) over N TwoHopFact-shaped chains (written as CSV, read
by the TwoHopFact reader), each N in its own subprocess, chunked (``chunk_rows``, shards on
disk) or whole (in memory, one file). Per run: CPU seconds of the capture alone, the child's
peak RSS (``ru_maxrss``), the bytes written, and the per-prompt costs::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/paper_sim_capture.py --chains 1000 4000 16000 \\
        --out /tmp/papersim/capture > /tmp/papersim/capture.log 2>&1

A cheaper stand-in for benchmarks/paper_sim.py when the machine is too loaded for whole runs:
it measures how capture time and memory grow with prompts in one process per size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(n: int, chunk_rows: int | None, out: Path) -> None:
    import resource

    import torch
    import yaml

    from fkr_kedro.analysis.capture import CaptureConfig, capture_activations
    from fkr_kedro.analysis.drift import drift_table
    from fkr_kedro.analysis.readouts import entrec
    from fkr_kedro.datasets.activations import ActivationCacheDataset
    from fkr_kedro.knowledge.twohopfact import (
        read_twohopfact,
        simulate_twohopfact,
        write_twohopfact_csv,
    )
    from fkr_kedro.modeling.load import build_from_config

    torch.set_num_threads(1)
    params = yaml.safe_load((ROOT / "conf/paper_sim/parameters.yml").read_text())
    lm = build_from_config(params["base_model"])
    csv = write_twohopfact_csv(simulate_twohopfact(n), out / f"chains_{n}.csv")
    two_hop = read_twohopfact(csv).chains
    settings = {**params["probe"]["capture"], "chunk_rows": chunk_rows, "progress": False}
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cpu0, t0 = time.process_time(), time.perf_counter()
    cache = capture_activations(lm.model, lm.tokenizer, None, two_hop, CaptureConfig(**settings), spool_dir=None)
    target = out / f"{'chunked' if chunk_rows else 'whole'}_{n}" / "activations.safetensors"
    ActivationCacheDataset(str(target)).save(cache)
    cpu_capture, wall_capture = time.process_time() - cpu0, time.perf_counter() - t0
    rss_capture = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # Read back the way the analyses do: EntRec and drift, a layer at a time.
    cache = ActivationCacheDataset(str(target)).load()
    cpu1 = time.process_time()
    entrec(lm.model, cache)
    drift_table({"fp": cache, "same": cache})
    cpu_read = time.process_time() - cpu1
    written = sum(f.stat().st_size for f in target.parent.rglob("*") if f.is_file())
    result = {
        "chains": n, "chunk_rows": chunk_rows, "capture_cpu_s": round(cpu_capture, 2), "capture_wall_s": round(wall_capture, 2),
        "analyses_cpu_s": round(cpu_read, 2), "rss_before_capture_mb": round(rss_before, 1),
        "peak_rss_after_capture_mb": round(rss_capture, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "written_mb": round(written / 2**20, 1), "prompt_tokens": int(sum(len(x) for x in lm.tokenizer(two_hop["prompt_two_hop"].tolist())["input_ids"])),
        "load": [round(x, 2) for x in os.getloadavg()],
    }
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chains", type=int, nargs="+", default=[1000, 4000, 16000])
    ap.add_argument("--modes", nargs="+", default=["chunked", "whole"], choices=["chunked", "whole"])
    ap.add_argument("--chunk-rows", type=int, default=4096)
    ap.add_argument("--out", type=Path, default=Path("/tmp/papersim/capture"))
    ap.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        n, chunk = int(args.child[0]), int(args.child[1])
        child(n, chunk or None, args.out)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for n in args.chains:
        for mode in args.modes:
            chunk = args.chunk_rows if mode == "chunked" else 0
            cmd = [sys.executable, __file__, "--out", str(args.out), "--child", str(n), str(chunk)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                print(proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{mode} capture of {n} chains failed ({proc.returncode})")
            results.append({"mode": mode, **json.loads(line[7:])})
            print(results[-1], flush=True)
            (args.out / "capture.json").write_text(json.dumps(results, indent=2) + "\n")
    for r in results:
        r["capture_cpu_ms_per_chain"] = round(1000 * r["capture_cpu_s"] / r["chains"], 3)
    print("| mode | chains | capture CPU s | ms/chain | peak RSS MB | written MB |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['mode']} | {r['chains']} | {r['capture_cpu_s']} | {r['capture_cpu_ms_per_chain']} | {r['peak_rss_mb']} | {r['written_mb']} |")


if __name__ == "__main__":
    main()
