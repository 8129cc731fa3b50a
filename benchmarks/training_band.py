"""Does a faster training setting keep "the same final metrics"? Its 3 seeds against the
current loop's 3 seeds, on the same world and prompts.

The baseline is a study with several training seeds (``training_seeds``, e.g.
``scripts/run_seeds.sh`` on conf/seeds): its ``training_metrics.json`` per seed. This script
trains the same model shape and schedule with the setting changed (``--loop``, ``--threads``,
``--batch-size`` with the steps rescaled to the same number of sequences) for the same seeds,
measures it the way the train pipeline does (``measure_trained_model``: one-hop recall and
held-out composition on the study's evaluation prompts), and compares the two sets of seeds
per metric with Welch's t-test (scipy), reporting the smallest difference that test would
detect with 80% power at 3 + 3 seeds (statsmodels). Seeds run side by side (``--jobs``, one
torch thread each unless ``--threads`` says otherwise).

    python benchmarks/training_band.py --study data/seeds --env seeds --loop packed
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

METRICS = ("one_hop.accuracy", "two_hop.held_out.accuracy", "two_hop.seen.accuracy")


def _baseline(study: Path, seeds: list[int], main_seed: int) -> dict[int, dict]:
    found = {}
    for seed in seeds:
        folder = study if seed == main_seed else study / f"seed{seed}"
        path = folder / "08_reporting" / "training_metrics.json"
        if not path.is_file():
            raise SystemExit(f"no {path}: run the study with training_seeds first (scripts/run_seeds.sh)")
        found[seed] = json.loads(path.read_text())
    return found


def _train_one(args: tuple) -> dict:
    study, shape, training, threads, seed = args
    import pandas as pd
    import torch

    torch.set_num_threads(threads)
    from fkr_kedro.pipelines.train.nodes import measure_trained_model, train_model

    corpus = (study / "05_model_input" / "train_corpus.txt").read_text()
    one_hop = pd.read_parquet(study / "05_model_input" / "one_hop_prompts.parquet")
    two_hop = pd.read_parquet(study / "05_model_input" / "two_hop_prompts.parquet")
    world = json.loads((study / "02_intermediate" / "world_summary.json").read_text())
    started = time.perf_counter()
    model, history, _ = train_model(corpus, shape, dataclasses.replace(training, seed=seed))
    from fkr_kedro.parameters import EvaluateSettings

    metrics = measure_trained_model(model, one_hop, two_hop, world, history, EvaluateSettings())
    metrics["wall_seconds"] = time.perf_counter() - started
    metrics["seed"] = seed
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", type=Path, default=Path("data/seeds"), help="the baseline study's folder")
    parser.add_argument("--env", default="seeds", help="its Kedro environment (model shape and training settings)")
    parser.add_argument("--loop", choices=("hf", "packed"), default=None)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training")
    parser.add_argument("--batch-size", type=int, default=None, help="steps scaled to keep the sequences seen")
    parser.add_argument("--seeds", type=int, nargs="*", default=None, help="default: the env's training_seeds")
    parser.add_argument("--jobs", type=int, default=3, help="seeds trained side by side")
    parser.add_argument("--alpha", type=float, default=0.05)
    args = parser.parse_args()

    import numpy as np
    from scipy import stats
    from statsmodels.stats.power import TTestIndPower

    from fkr_kedro.run_config import StudyConfigLoader
    from fkr_kedro.parameters import validate_parameters

    loader = StudyConfigLoader(str(Path.cwd() / "conf"), env=args.env, base_env="base", default_run_env="local")
    params = validate_parameters(loader["parameters"])
    seeds = args.seeds or params.training_seeds or [params.training.seed]
    training = params.training
    changes = {}
    if args.loop:
        changes["loop"] = args.loop
    if args.batch_size:
        sequences = training.steps * training.batch_size
        changes.update(batch_size=args.batch_size, steps=round(sequences / args.batch_size),
                       warmup_steps=round(training.warmup_steps * training.batch_size / args.batch_size))
    setting = dataclasses.replace(training, **changes)
    label = ", ".join(f"{k}={v}" for k, v in changes.items()) + f", threads={args.threads}"
    if not (args.study / "05_model_input" / "train_corpus.txt").is_file():
        raise SystemExit(f"no {args.study / '05_model_input'}: run the study's data_prep first")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    print(f"setting: {label}; baseline: {args.study} (loop {training.loop}), seeds {seeds}", flush=True)
    jobs = [(args.study, params.model_shape, setting, args.threads, seed) for seed in seeds]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        lever = {m["seed"]: m for m in pool.map(_train_one, jobs)}
    baseline = _baseline(args.study, seeds, params.training.seed)  # read last: it may still be training

    rows = []
    for metric in METRICS:
        base = np.array([baseline[s][metric] for s in seeds])
        new = np.array([lever[s][metric] for s in seeds])
        test = stats.ttest_ind(new, base, equal_var=False)
        pooled = float(np.sqrt((base.var(ddof=1) + new.var(ddof=1)) / 2))
        effect = TTestIndPower().solve_power(nobs1=len(seeds), alpha=args.alpha, power=0.8, ratio=1.0)
        rows.append({"metric": metric, "baseline": base, "setting": new, "difference": new.mean() - base.mean(),
                     "p": float(test.pvalue), "detectable": effect * pooled})
    out = args.study / "training_band" / (label.replace(", ", "_").replace("=", "-") + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"setting": label, "baseline": {str(k): v for k, v in baseline.items()},
                               "lever": {str(k): v for k, v in lever.items()}}, indent=2, default=float))
    print(f"{'metric':<28}{'baseline seeds':<24}{'setting seeds':<24}{'diff':>8}{'Welch p':>9}{'80% power at':>14}")
    for r in rows:
        fmt = lambda a: " ".join(f"{100 * v:.1f}" for v in a)  # noqa: E731
        print(f"{r['metric']:<28}{fmt(r['baseline']):<24}{fmt(r['setting']):<24}{100 * r['difference']:>+8.1f}"
              f"{r['p']:>9.2g}{100 * r['detectable']:>13.1f}")
    seconds = [lever[s]["train.seconds"] for s in seeds]
    print(f"training seconds (setting, {args.jobs} side by side): {', '.join(f'{s:.0f}' for s in seconds)}; "
          f"baseline recorded: {', '.join(str(round(baseline[s]['train.seconds'])) for s in seeds)}")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
