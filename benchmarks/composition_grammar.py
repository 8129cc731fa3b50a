"""Experiment (not a test): does a left-to-right two-hop grammar make the embedded model
compose held-out chains?

Default grammar: "The country of the birth city of Ponus Foga is". Left-to-right grammar:
"Ponus Foga 's birth city 's country is", with every relation also stated as
"X 's birth city is Y", so the bridge is resolved in reading order. Trains the default shape
and world (conf/base) with the chosen grammar and prints two-hop accuracy per composition and
split beside the best constant guess. Takes about 10 minutes on one CPU thread.

    OMP_NUM_THREADS=1 python benchmarks/composition_grammar.py --grammar left-to-right
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import pandas as pd
import torch

import fkr_kedro.knowledge.world as world_module
from fkr_kedro.analysis.recall import evaluate_one_hop, evaluate_two_hop, summarize_recall
from fkr_kedro.knowledge.world import RELATIONS, WorldConfig, chance_rates, generate_world
from fkr_kedro.modeling.tokenizer import build_word_tokenizer
from fkr_kedro.modeling.train import ModelShape, TrainConfig, train_causal_lm

NOUNS = {
    "birth_city": "birth city", "employer": "employer", "city_country": "country",
    "country_continent": "continent", "company_hq": "headquarters city", "landmark_country": "location",
}


def use_left_to_right_grammar() -> None:
    for name, relation in list(RELATIONS.items()):
        RELATIONS[name] = dataclasses.replace(
            relation,
            templates=(f"{{s}} 's {NOUNS[name]} is {{o}}",) + relation.templates,
            mention=f"{{s}} 's {NOUNS[name]}",
        )

    def two_hop_prompt(r1: str, r2: str, e1: str) -> tuple[str, int, str]:
        mention = RELATIONS[r1].mention.format(s=e1)
        return f"{mention} 's {NOUNS[r2]} is", 0, mention

    world_module._two_hop_prompt = two_hop_prompt


def print_composition(model, tokenizer, world: world_module.World, chains_per_split: int) -> None:
    """Print one-hop recall on 1,200 facts, two-hop accuracy on seen and held-out chains, and
    latent composition per composition and split beside the best constant guess."""
    one_hop = world.one_hop_table().sample(1200, random_state=0)
    two_hop = world.two_hop_table()
    two_hop = pd.concat(
        [chains.sample(min(len(chains), chains_per_split), random_state=0) for _, chains in two_hop.groupby(["composition", "split"])]
    )
    scores = evaluate_two_hop(model, tokenizer, two_hop)
    metrics = summarize_recall(evaluate_one_hop(model, tokenizer, one_hop), scores, two_hop)
    print(json.dumps({k: round(v, 4) for k, v in metrics.items() if "accuracy" in k or "chance" in k}, indent=1))
    composed = scores[scores["readout"] == "r2(r1(e1))"]
    table = composed.groupby(["composition", "split"])["correct"].mean().unstack()
    table["chance"] = chance_rates(two_hop)
    print(table.round(3).to_string())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grammar", choices=["default", "left-to-right"], default="left-to-right")
    parser.add_argument("--steps", type=int, default=5500)
    parser.add_argument("--chains", type=int, default=150, help="chains evaluated per composition and split")
    args = parser.parse_args()
    if args.grammar == "left-to-right":
        use_left_to_right_grammar()
    torch.manual_seed(0)
    # conf/base/parameters_data_prep.yml and parameters_train.yml
    world = generate_world(WorldConfig(
        seed=0, n_people=3000, n_cities=100, n_countries=20, n_continents=6, n_companies=50,
        n_landmarks=100, n_first_names=60, n_last_names=60, n_place_parts=30, held_out_fraction=0.1,
    ))
    corpus = world.corpus()
    tokenizer = build_word_tokenizer(corpus)
    shape = ModelShape(hidden_size=64, num_layers=4, num_heads=4, intermediate_size=256, max_position_embeddings=64)
    config = TrainConfig(steps=args.steps, batch_size=128, learning_rate=0.003, warmup_steps=200, weight_decay=0.1, seed=0, log_every=500)
    start = time.perf_counter()
    model, _ = train_causal_lm(corpus, tokenizer, shape, config)
    print(f"trained in {time.perf_counter() - start:.0f} s")

    print_composition(model, tokenizer, world, args.chains)


if __name__ == "__main__":
    main()
