"""Paper scale simulated on a CPU: time and peak memory per stage as two-hop prompts grow.

Runs the `paper_sim` environment (conf/paper_sim: the `paper` environment's code paths on a
random scaled-down Qwen2 with SmolLM2's tokenizer, the full LRE and a TwoHopFact-format CSV of
N synthetic chains) once per N, each stage as its own ``kedro run`` in a fresh copy of the
project, and records per stage the wall time and the peak resident memory (``ru_maxrss`` of
the finished child, from ``os.wait4``), plus the rows written and the disk used::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/paper_sim.py --chains 1000 10000 45595 \\
        --out /tmp/papersim/bench > /tmp/papersim/bench.log 2>&1

Prints a table and writes ``paper_sim.json`` / ``paper_sim.md`` in ``--out``. Linearity is
judged on the marginal cost: the time per added chain between the two smallest sizes against
that between the two largest (a fixed part, model loading and the full LRE, is in every size).
Report ``uptime``'s load average with the figures: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEDRO = [sys.executable, "-m", "kedro"]
OUTPUTS = "data/paper_sim"  # the paper_sim environment's output folder (run_config.study_root)
STAGES = {
    "data_prep": ["--pipelines=data_prep"],
    "base_model": ["--nodes=prepare_base_model"],
    "quantize": ["--pipelines=quantize"],
    "evaluate": ["--pipelines=evaluate"],
    "probe": ["--pipelines=probe"],
}


def copy_project(dest: Path, variants: list[str] | None) -> Path:
    """The project's configuration in ``dest`` (data/ empty); ``variants``: keep only these of
    conf/paper_sim's variants (Kedro's --params cannot remove a key)."""
    import yaml

    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copytree(ROOT / "conf", dest / "conf", ignore=shutil.ignore_patterns("local"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    (dest / "conf" / "local").mkdir()
    (dest / "src").mkdir()  # bootstrap_project wants a source folder; the package is importable
    if variants:
        file = dest / "conf/paper_sim/parameters.yml"
        params = yaml.safe_load(file.read_text())
        unknown = sorted(set(variants) - set(params["variants"]))
        if unknown:
            raise SystemExit(f"--variants {unknown} are not in conf/paper_sim: {sorted(params['variants'])}")
        params["variants"] = {name: params["variants"][name] for name in variants}
        file.write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def run_stage(project: Path, args: list[str], params: str, log: Path) -> dict:
    """One ``kedro run``; wall seconds and the child's peak RSS (wait4's ru_maxrss, KiB)."""
    env = {
        **os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1",
        "TQDM_DISABLE": "1", "COLUMNS": "200", "PYTHONPATH": str(ROOT / "src"),
    }
    cmd = [*KEDRO, "run", "--env=paper_sim", *args, f"--params={params}"]
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({code}); see {log}")
    return {"seconds": round(seconds, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2)}


def du_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20, 1)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chains", type=int, nargs="+", default=[1000, 10000, 45595])
    ap.add_argument("--out", type=Path, default=Path("/tmp/papersim/bench"))
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=list(STAGES))
    ap.add_argument("--params", default="", help="extra --params for every stage, comma separated")
    ap.add_argument("--variants", nargs="+", default=None, help="only these variants of conf/paper_sim (fp first)")
    ap.add_argument("--render", type=Path, default=None, help="only print the table of a paper_sim.json")
    ap.add_argument("--project", action="store_true", help="only print the H100 projection of conf/paper")
    args = ap.parse_args()
    if args.project:
        print(render_projection())
        return
    if args.render:
        print(render(json.loads(args.render.read_text())))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    lre = (ROOT / "../shared/data/lre").resolve()
    results = []
    for n in args.chains:
        project = copy_project(args.out / f"project_{n}", args.variants)
        params = f"twohopfact.simulate_chains={n},lre.path={lre}" + (f",{args.params}" if args.params else "")
        row = {"chains": n, "params": params, "variants": args.variants, "stages": {}, "load_before": load_average()}
        results.append(row)
        for stage in args.stages:
            row["stages"][stage] = run_stage(project, STAGES[stage], params, args.out / f"{n}_{stage}.log")
            row["stages"][stage]["load_after"] = load_average()
            print(n, stage, row["stages"][stage], flush=True)
            (args.out / "paper_sim.json").write_text(json.dumps(results, indent=2) + "\n")
        counts = _prompt_counts(project)
        row.update(counts)
        outputs = project / OUTPUTS / "07_model_output"
        row["activations_mb"] = du_mb(outputs) if outputs.exists() else 0.0
        row["total_seconds"] = round(sum(s["seconds"] for s in row["stages"].values()), 2)
        row["total_cpu_seconds"] = round(sum(s["cpu_seconds"] for s in row["stages"].values()), 2)
        (args.out / "paper_sim.json").write_text(json.dumps(results, indent=2) + "\n")
    table = render(results)
    (args.out / "paper_sim.md").write_text(table + "\n")
    print(table)


def _prompt_counts(project: Path) -> dict:
    import pyarrow.parquet as pq

    out = {}
    for name, path in (("one_hop", "05_model_input/one_hop_prompts.parquet"),
                       ("two_hop", "05_model_input/two_hop_prompts.parquet")):
        file = project / OUTPUTS / path
        out[f"{name}_prompts"] = int(pq.ParquetFile(file).metadata.num_rows) if file.exists() else None
    return out


def render(results: list[dict]) -> str:
    """Wall s / CPU s / peak RSS MB per stage and size; then the marginal cost per chain
    between successive sizes (CPU seconds: wall time depends on the machine's load)."""
    results = [r for r in results if r["stages"]]
    stages = list(results[0]["stages"])
    lines = ["| chains | one-hop prompts | " + " | ".join(f"{s}: wall s / CPU s / peak MB" for s in stages)
             + " | total CPU s | activations MB | load avg (1 min) |",
             "|" + "---|" * (len(stages) + 5)]
    for r in results:
        cells = [
            f"{r['stages'][s]['seconds']:.0f} / {r['stages'][s]['cpu_seconds']:.0f} / {r['stages'][s]['peak_rss_mb']:.0f}"
            if s in r["stages"] else "-" for s in stages
        ]
        loads = [r["load_before"][0]] + [r["stages"][s]["load_after"][0] for s in r["stages"]]
        lines.append(f"| {r['chains']} | {r.get('one_hop_prompts')} | " + " | ".join(cells)
                     + f" | {r.get('total_cpu_seconds', '-')} | {r.get('activations_mb', '-')} | {min(loads):.1f}-{max(loads):.1f} |")
    complete = [r for r in results if all(s in r["stages"] for s in stages)]
    if len(complete) >= 3:
        lines.append("")
        a, b, c = complete[0], complete[-2], complete[-1]
        for s in [*stages, "total"]:
            def t(r, s=s):
                return r["total_cpu_seconds"] if s == "total" else r["stages"][s]["cpu_seconds"]
            low = (t(b) - t(a)) / (b["chains"] - a["chains"])
            high = (t(c) - t(b)) / (c["chains"] - b["chains"])
            ratio = high / low if low > 0 else float("nan")
            lines.append(f"- {s}: CPU ms per added chain {1000 * low:.2f} ({a['chains']}->{b['chains']}) vs "
                         f"{1000 * high:.2f} ({b['chains']}->{c['chains']}): ratio {ratio:.2f}")
    return "\n".join(lines)




# ------------------------------------------------------------------------------------------
# Projection of the `paper` environment onto one H100 (``--project``): every input is stated.

# The anchor (shared/docs/design.md, measured on an H100): a 7.6B Qwen2.5-shaped model in bf16
# ran a 20-token forward pass with all hidden states at 908 prompts/s in batches of 256 (28% of
# peak) and 22 prompts/s one at a time; greedy generation of 8 tokens one prompt at a time ran
# at 3.1 prompts/s.
ANCHOR = {"params_b": 7.6, "layers": 28, "forward_tokens_per_s": 908 * 20, "forward_batch1_s": 1 / 22,
          "decode_step_s": 1 / (3.1 * 8)}
MODELS = {  # hub configs: parameters (billions), decoder layers, hidden size
    "Qwen/Qwen2.5-7B": {"params_b": 7.6, "layers": 28, "d": 3584},
    "Qwen/Qwen2.5-14B": {"params_b": 14.7, "layers": 48, "d": 5120},
    "meta-llama/Meta-Llama-3-8B": {"params_b": 8.0, "layers": 32, "d": 4096},
}
# Generation slowdown of each variant's kernels against bf16: ASSUMED, not measured here.
VARIANT_SLOWDOWN = {"fp": 1.0, "gptq_w8_g128": 1.25, "gptq_w4_g128": 1.25, "awq_w4_g128": 1.25,
                    "bnb_nf4": 2.0, "bnb_int8": 3.0}
# The paper environment's prompts (LRE placed with the model's tokenizer; TwoHopFact's chains).
LRE_FACTS, CHAINS, PROMPT_TOKENS = 10_982, 45_595, 10.0
EVAL_BATCH, NEW_TOKENS, CAPTURE_BATCH = 64, 12, 16


def projection() -> list[dict]:
    rows = []
    eval_prompts = LRE_FACTS + 3 * CHAINS  # one-hop facts; three readouts per chain
    capture_forwards = LRE_FACTS + 2 * CHAINS  # two-hop prompt + its one-hop prompt (upper bound)
    for model, m in MODELS.items():
        size, depth = m["params_b"] / ANCHOR["params_b"], m["layers"] / ANCHOR["layers"]
        prefill = EVAL_BATCH * PROMPT_TOKENS * size / ANCHOR["forward_tokens_per_s"]
        # A decode step at batch 64 is assumed latency-bound like batch 1 (per-layer overhead).
        batch_s = prefill + NEW_TOKENS * ANCHOR["decode_step_s"] * depth
        eval_fp_s = eval_prompts / EVAL_BATCH * batch_s
        # Capture: one forward per batch of 16 ~10-token prompts, assumed as long as the
        # anchor's single 20-token prompt (latency-bound), scaled by depth.
        capture_s = capture_forwards / CAPTURE_BATCH * ANCHOR["forward_batch1_s"] * depth
        per_prompt_bytes = 2 * (2 * (m["layers"] + 1) + 2 * m["layers"]) * m["d"]  # fp16, 2 positions + attn/mlp
        act_gb = (LRE_FACTS + CHAINS) * per_prompt_bytes / 1e9
        for variant, slow in VARIANT_SLOWDOWN.items():
            rows.append({"model": model, "variant": variant, "evaluate_min": eval_fp_s * slow / 60,
                         "capture_min": capture_s * slow / 60, "activations_gb": act_gb})
    return rows


def render_projection() -> str:
    lines = ["| model | variant | evaluate (min) | capture (min) | activations written (GB) |", "|---|---|---|---|---|"]
    for r in projection():
        lines.append(f"| {r['model']} | {r['variant']} | {r['evaluate_min']:.0f} | {r['capture_min']:.0f} | {r['activations_gb']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
