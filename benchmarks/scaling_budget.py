"""Benchmark (not a test): how long the embedded scaling study's training takes, per size.

Trains every size of conf/base/parameters_scaling.yml for a few steps on the real corpus
(the scaling world's statements plus the in-context task's), in one process, and prints each size's
steps per second, its cost relative to the first size (a ratio measured in one run, which
survives a loaded machine better than the absolute figures), its configured steps
(``exposures_per_fact``) and the projected training time at the measured rate.

    OMP_NUM_THREADS=1 python benchmarks/scaling_budget.py            # 150 steps a size
    OMP_NUM_THREADS=2 python benchmarks/scaling_budget.py --steps 300

Report the load average (``uptime``) beside the figures: on a shared machine the absolute
times are upper bounds.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import yaml

from fkr_kedro.knowledge.utilization import in_context_task
from fkr_kedro.knowledge.world import generate_world
from fkr_kedro.modeling.tokenizer import build_word_tokenizer
from fkr_kedro.modeling.train import non_embedding_parameters, train_causal_lm
from fkr_kedro.scaling.config import ScalingSettings

CONF = Path(__file__).resolve().parents[1] / "conf" / "base"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150, help="steps timed per size (after 20 warm-up steps)")
    args = parser.parse_args()

    settings = ScalingSettings(**yaml.safe_load((CONF / "parameters_scaling.yml").read_text())["scaling"])
    world = generate_world(settings.world)
    task = in_context_task(world, settings.in_context)
    corpus = world.corpus() + list(task.train_statements)
    tokenizer = build_word_tokenizer(corpus)
    training = settings.training_for(len(corpus))
    print(f"{len(corpus)} statements, {training.steps} steps of {training.batch_size} a size "
          f"({settings.exposures_per_fact} exposures per statement)")

    rows, total = [], 0.0
    for name, size in settings.sizes.items():
        timed = {}
        for steps in (20, 20 + args.steps):  # the difference excludes start-up and warm-up
            config = dataclasses.replace(training, steps=steps, warmup_steps=10, log_every=10_000)
            start = time.perf_counter()
            model, _ = train_causal_lm(corpus, tokenizer, size.shape(), config, progress=False)
            timed[steps] = time.perf_counter() - start
        rate = args.steps / (timed[20 + args.steps] - timed[20])
        projected = training.steps / rate
        total += projected
        rows.append((name, non_embedding_parameters(model), rate, projected))
    first = rows[0][2]
    print(f"{'size':8} {'N':>10} {'steps/s':>8} {'cost vs ' + rows[0][0]:>14} {'projected':>10}")
    for name, n, rate, projected in rows:
        print(f"{name:8} {n:>10,} {rate:>8.1f} {first / rate:>14.2f} {projected / 60:>8.1f} min")
    print(f"training, all sizes: {total / 60:.1f} min at the measured rates")


if __name__ == "__main__":
    main()
