"""Experiment (not a test): does the embedded model compose held-out two-hop chains, and is
the bridge linearly decodable on the way?

Trains a Llama on the default world (conf/base) with the chosen two-hop grammar, shape and
training length, then prints one-hop recall, two-hop accuracy per composition and split
beside the best constant guess, and a bridge probe: a logistic regression decoding the bridge
entity (100 cities, 50 companies) from the residual stream of the birth-city and employer
chains, trained and tested on different people, with a shuffled-label control, at three
positions: the mention's last token ("... Ponus Foga"), the token after it ("is") and the
last token. docs/results.md lists what each setting measured.

    OMP_NUM_THREADS=1 python benchmarks/composition.py                      # the default
    OMP_NUM_THREADS=1 python benchmarks/composition.py --grammar nested     # the old grammar
    OMP_NUM_THREADS=1 python benchmarks/composition.py --steps 5500 --layers 8 --width 48

The default takes about 10 minutes on one CPU thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from fkr_kedro.analysis.capture import char_span_to_last_token
from fkr_kedro.analysis.probes import majority_rate, make_probe
from fkr_kedro.analysis.recall import evaluate_one_hop, evaluate_two_hop, summarize_recall
from fkr_kedro.knowledge.chance import chance_rate, chance_rates
from fkr_kedro.knowledge.utilization import InContextConfig, InContextTask, in_context_task
from fkr_kedro.knowledge.world import TWO_HOP_GRAMMARS, World, WorldConfig, generate_world
from fkr_kedro.modeling.load import CausalLM
from fkr_kedro.modeling.tokenizer import build_word_tokenizer
from fkr_kedro.modeling.train import ModelShape, TrainConfig, train_causal_lm
from fkr_kedro.scaling.sweep import evaluate_tasks, task_from_table

PROBED = ("birth_city>city_country", "employer>company_hq")
CONF = Path(__file__).resolve().parents[1] / "conf" / "base"


def base_parameters(name: str) -> dict:
    return yaml.safe_load((CONF / f"parameters_{name}.yml").read_text())


def print_composition(model, tokenizer, world: World, chains_per_split: int) -> None:
    """One-hop recall on 1,200 facts, two-hop accuracy on seen and held-out chains, and
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


def print_in_context(model, tokenizer, task: InContextTask) -> None:
    """The in-context task's accuracy on held-out bridges, scored by the scaling sweep's own code."""
    held = task.prompts[task.prompts["split"] == "held_out_bridge"]
    chance = chance_rate(held, "composition", "answer")
    scored = evaluate_tasks(
        CausalLM(model, tokenizer),
        [task_from_table("ku_in_context", "KU", held, "prompt", "answer", "answer_aliases", chance)],
    )["ku_in_context"]
    print(f"in-context, held-out bridges: {scored['accuracy']:.4f} (chance {chance:.4f}, {len(held)} prompts)")


def bridge_probe(model, tokenizer, world: World) -> dict[str, float]:
    """Per position and layer: accuracy of decoding e2 for people the probe never saw."""
    two_hop = world.two_hop_table()
    rows = two_hop[two_hop["composition"].isin(PROBED)].reset_index(drop=True)
    features: dict[str, list[np.ndarray]] = {"mention": [], "after_mention": [], "last": []}
    for i in range(0, len(rows), 256):
        chunk = rows.iloc[i : i + 256]
        enc = tokenizer(chunk["prompt_two_hop"].tolist(), return_offsets_mapping=True, padding=True, return_tensors="pt")
        with torch.no_grad():
            out = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, output_hidden_states=True)
        hidden = torch.stack(out.hidden_states, 1)  # [batch, layers + 1, tokens, width]
        for j, (start, end) in enumerate(zip(chunk["mention_start"], chunk["mention_end"])):
            pos = char_span_to_last_token(enc.offset_mapping[j], int(start), int(end))
            features["mention"].append(hidden[j, :, pos].numpy())
            features["after_mention"].append(hidden[j, :, pos + 1].numpy())
            features["last"].append(hidden[j, :, -1].numpy())  # left padding: the last token
    y, people = rows["e2"].to_numpy(), rows["e1"].to_numpy()
    rng = np.random.default_rng(0)
    test = np.isin(people, rng.choice(np.unique(people), len(np.unique(people)) // 4, replace=False))
    out = {"chance": round(majority_rate(y[test]), 3)}
    for site, X in features.items():
        X = np.stack(X)
        for layer in range(X.shape[1]):
            for name, labels in (("probe", y[~test]), ("shuffled", rng.permutation(y[~test]))):
                probe = make_probe().fit(X[~test, layer], labels)
                out[f"{site}.L{layer}.{name}"] = round(float((probe.predict(X[test, layer]) == y[test]).mean()), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grammar", choices=TWO_HOP_GRAMMARS, help="two-hop grammar (conf/base: predicate)")
    parser.add_argument("--people", type=int, help="n_people (conf/base: 3000)")
    parser.add_argument("--world-seed", type=int, default=0, help="another draw of the same world")
    parser.add_argument("--steps", type=int, help="training steps (conf/base: 11000)")
    parser.add_argument("--weight-decay", type=float, help="AdamW weight decay (conf/base: 0.1)")
    parser.add_argument("--batch-size", type=int, help="sequences a step (conf/base: 128)")
    parser.add_argument("--learning-rate", type=float, help="peak learning rate (conf/base: 0.003)")
    parser.add_argument("--layers", type=int, help="decoder layers (conf/base: 4)")
    parser.add_argument("--width", type=int, help="hidden size, MLP 4x; divisible by 8 (conf/base: 64)")
    parser.add_argument("--mlp", type=int, help="MLP width (default: 4x the hidden size)")
    parser.add_argument("--in-context", type=int, default=0,
                        help="add the scaling study's in-context statements, this many per composition "
                             "(conf/parameters_scaling.yml: 750), and score its held-out bridges")
    parser.add_argument("--in-context-names", choices=("own_parts", "world_parts"), default="own_parts",
                        help="name parts of the in-context task's fictional people (conf/base: own_parts)")
    parser.add_argument("--seed", type=int, help="training seed (conf/base: 0)")
    parser.add_argument("--chains", type=int, default=150, help="chains evaluated per composition and split")
    args = parser.parse_args()

    # conf/base/parameters_data_prep.yml and parameters_train.yml, with the flags given
    world_params = base_parameters("data_prep")["world"] | {"seed": args.world_seed}
    if args.grammar is not None:
        world_params["two_hop_grammar"] = args.grammar
    if args.people is not None:
        world_params["n_people"] = args.people
    world = generate_world(WorldConfig(**world_params))
    corpus = world.corpus()
    in_context = None
    if args.in_context:
        config = InContextConfig(train_statements_per_composition=args.in_context, subject_names=args.in_context_names)
        in_context = in_context_task(world, config)
        corpus += in_context.train_statements
    print(f"{len(corpus)} statements; e.g. {world.two_hop_table()['prompt_two_hop'].iloc[0]!r}")
    tokenizer = build_word_tokenizer(corpus)
    train_params = base_parameters("train")
    shape = ModelShape(**train_params["model_shape"])
    if args.layers is not None:
        shape = dataclasses.replace(shape, num_layers=args.layers)
    if args.width is not None:
        shape = dataclasses.replace(shape, hidden_size=args.width, intermediate_size=4 * args.width)
    if args.mlp is not None:
        shape = dataclasses.replace(shape, intermediate_size=args.mlp)
    config = TrainConfig(**train_params["training"])
    if args.steps is not None:
        config = dataclasses.replace(config, steps=args.steps)
    if args.weight_decay is not None:
        config = dataclasses.replace(config, weight_decay=args.weight_decay)
    if args.seed is not None:
        config = dataclasses.replace(config, seed=args.seed)
    if args.batch_size is not None:
        config = dataclasses.replace(config, batch_size=args.batch_size)
    if args.learning_rate is not None:
        config = dataclasses.replace(config, learning_rate=args.learning_rate)
    start = time.perf_counter()
    model, history = train_causal_lm(corpus, tokenizer, shape, config, progress=False)
    print(f"trained in {time.perf_counter() - start:.0f} s, final loss {history[-1]['loss']:.3f}")
    print_composition(model, tokenizer, world, args.chains)
    if in_context is not None:
        print_in_context(model, tokenizer, in_context)
    print("bridge probe:", json.dumps(bridge_probe(model, tokenizer, world)))


if __name__ == "__main__":
    main()
