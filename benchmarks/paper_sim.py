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
STAGES = {
    "data_prep": ["--pipelines=data_prep"],
    "base_model": ["--nodes=prepare_base_model"],
    "quantize": ["--pipelines=quantize"],
    "evaluate": ["--pipelines=evaluate"],
    "probe": ["--pipelines=probe"],
}


def copy_project(dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copytree(ROOT / "conf", dest / "conf", ignore=shutil.ignore_patterns("local"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    (dest / "conf" / "local").mkdir()
    (dest / "src").mkdir()  # bootstrap_project wants a source folder; the package is importable
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
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    lre = (ROOT / "../shared/data/lre").resolve()
    results = []
    for n in args.chains:
        project = copy_project(args.out / f"project_{n}")
        params = f"twohopfact.simulate_chains={n},lre.path={lre}" + (f",{args.params}" if args.params else "")
        row = {"chains": n, "stages": {}, "load_before": load_average()}
        for stage in args.stages:
            row["stages"][stage] = run_stage(project, STAGES[stage], params, args.out / f"{n}_{stage}.log")
            row["stages"][stage]["load_after"] = load_average()
            print(n, stage, row["stages"][stage], flush=True)
        counts = _prompt_counts(project)
        row.update(counts)
        row["activations_mb"] = du_mb(project / "data/07_model_output") if (project / "data/07_model_output").exists() else 0.0
        row["total_seconds"] = round(sum(s["seconds"] for s in row["stages"].values()), 2)
        results.append(row)
        (args.out / "paper_sim.json").write_text(json.dumps(results, indent=2) + "\n")
    table = render(results)
    (args.out / "paper_sim.md").write_text(table + "\n")
    print(table)


def _prompt_counts(project: Path) -> dict:
    import pyarrow.parquet as pq

    out = {}
    for name, path in (("one_hop", "data/05_model_input/one_hop_prompts.parquet"),
                       ("two_hop", "data/05_model_input/two_hop_prompts.parquet")):
        file = project / path
        out[f"{name}_prompts"] = int(pq.ParquetFile(file).metadata.num_rows) if file.exists() else None
    return out


def render(results: list[dict]) -> str:
    stages = list(results[0]["stages"])
    lines = ["| chains | one-hop | " + " | ".join(f"{s} s / peak MB" for s in stages) + " | total s | activations MB |",
             "|" + "---|" * (len(stages) + 4)]
    for r in results:
        cells = [f"{r['stages'][s]['seconds']:.0f} / {r['stages'][s]['peak_rss_mb']:.0f}" for s in stages]
        lines.append(f"| {r['chains']} | {r.get('one_hop_prompts')} | " + " | ".join(cells)
                     + f" | {r['total_seconds']:.0f} | {r['activations_mb']} |")
    if len(results) >= 3:
        a, b, c = results[0], results[-2], results[-1]
        lines.append("")
        for s in [*stages, "total"]:
            t = (lambda r: r["total_seconds"]) if s == "total" else (lambda r, s=s: r["stages"][s]["seconds"])
            low = (t(b) - t(a)) / (b["chains"] - a["chains"])
            high = (t(c) - t(b)) / (c["chains"] - b["chains"])
            ratio = high / low if low > 0 else float("nan")
            lines.append(f"- {s}: marginal ms per chain {1000 * low:.2f} ({a['chains']}->{b['chains']}) vs "
                         f"{1000 * high:.2f} ({b['chains']}->{c['chains']}): ratio {ratio:.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
