"""Experiment (not a test): does a loss on the in-context statements' answers only, not on
their contexts, give the scaling study's models back their latent composition?

Every in-context statement ("Stegras Drimo was born in Stogris Maze ; Stegras Drimo is from
Godro Stukri") also states a random fact about a fictional person. This trains one size of
the scaling study exactly as `kedro run --pipeline=scaling` does (its world, corpus,
tokenizer, training settings and 70 exposures), with the transformers loss (`training.loop:
hf`) masked on every token up to and including the " ; " of the statements that have one
(`training.loss_starts_after`, the pipeline's setting; `--mask 0`: loss on every token, the
setting of the first two runs), then prints held-out composition and the in-context task's
accuracy on held-out bridges. docs/scaling.md has what it measured.

    OMP_NUM_THREADS=1 python benchmarks/in_context_loss.py --size d4w64m128 [--mask 0]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import yaml

from composition import print_composition, print_in_context
from fkr_kedro.knowledge.utilization import SEPARATOR, in_context_task
from fkr_kedro.knowledge.world import generate_world
from fkr_kedro.modeling.tokenizer import build_word_tokenizer
from fkr_kedro.modeling.train import train_causal_lm
from fkr_kedro.scaling.config import ScalingSettings

CONF = Path(__file__).resolve().parents[1] / "conf/base/parameters_scaling.yml"
SCALING = ScalingSettings.model_validate(yaml.safe_load(CONF.read_text())["scaling"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SCALING.sizes), default="d4w64", help="one of scaling.sizes")
    parser.add_argument("--mask", type=int, choices=(0, 1), default=1, help="1: no loss on the contexts")
    args = parser.parse_args()

    world = generate_world(SCALING.world)
    task = in_context_task(world, SCALING.in_context)
    corpus = world.corpus() + task.train_statements
    tokenizer = build_word_tokenizer(corpus)
    settings = dataclasses.replace(
        SCALING.training_for(len(corpus)), loop="hf", loss_starts_after=SEPARATOR if args.mask else None
    )
    shape = SCALING.sizes[args.size].shape()
    start = time.perf_counter()
    model, history = train_causal_lm(corpus, tokenizer, shape, settings, progress=False)
    print(f"{args.size}, mask {args.mask}: {settings.steps} steps in {time.perf_counter() - start:.0f} s, final loss {history[-1]['loss']:.3f}")
    print_composition(model, tokenizer, world, chains_per_split=150)
    print_in_context(model, tokenizer, task)


if __name__ == "__main__":
    main()
