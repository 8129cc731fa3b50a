"""Experiment (not a test): which levers make the embedded model compose held-out chains?

The default model memorizes one-hop facts (99%) but answers held-out two-hop chains
("The country of the birth city of Ponus Foga is", never stated in training) at chance.
This script trains the default shape (4 layers, width 64, 5,500 steps of batch 128) on the
default world with optional changes and prints, per composition, accuracy on held-out and
seen chains beside the best constant guess, then a bridge probe: a logistic regression
decoding the birth city (100 classes) from the residual stream at the end of the mention
"the birth city of <person>", trained and tested on different people, with a shuffled-label
control. About 10 minutes on one CPU thread.

Levers:
  --more-second-hops  five more relations, so a person's birth city bridges four
                      compositions (country, river, football club, airport) and their
                      employer three (headquarters, rival, founding city): a held-out chain's
                      first hop is then seen composed with other second hops, and its second
                      hop seen composed for the other people of that city (the
                      in-distribution setting of Wang et al. 2024, "Grokked transformers are
                      implicit reasoners");
  --second-hops R ... only these of the five (e.g. city_river city_club);
  --people N          fewer people: more passes over each statement in the same steps;
  --weight-decay W    AdamW weight decay (0.1 by default; larger decay is reported to speed
                      up grokking);
  --bios K            K extra sequences per person stating both their facts in random order
                      (the augmentation that makes attributes linearly decodable at the name in
                      Allen-Zhu & Li, "Physics of language models 3.1");
  --shared-layers K   only K distinct layers, repeated (layer i uses layer i mod K's weights);
  --width W           hidden size W, MLP 4W (64 by default).
  --world-seed S      another draw of the same world.

    OMP_NUM_THREADS=1 python benchmarks/composition_levers.py --more-second-hops --people 1000 --weight-decay 0.5

docs/results.md lists what each lever measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import time

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import fkr_kedro.knowledge.world as world_module
import fkr_kedro.modeling.train as train_module
from composition_grammar import print_composition  # benchmarks/ is on the path when run as a script
from fkr_kedro.knowledge.world import COMPOSITIONS, RELATIONS, Relation, WorldConfig, generate_world
from fkr_kedro.modeling.tokenizer import build_word_tokenizer
from fkr_kedro.modeling.train import ModelShape, TrainConfig, train_causal_lm

EXTRA_RELATIONS = (
    Relation("city_river", "city", "river",
             ("The river of {s} is {o}", "{s} lies on {o}", "{s} sits on {o}"), "the river of {s}"),
    Relation("city_club", "city", "club",
             ("The football club of {s} is {o}", "{s} is home to {o}", "{s} supports {o}"),
             "the football club of {s}"),
    Relation("city_airport", "city", "airport",
             ("The airport of {s} is {o}", "{s} is served by {o}", "{s} flies from {o}"), "the airport of {s}"),
    Relation("company_rival", "company", "company",
             ("The rival of {s} is {o}", "{s} competes with {o}", "{s} is a rival of {o}"), "the rival of {s}"),
    Relation("company_founding_city", "company", "city",
             ("The founding city of {s} is {o}", "{s} was founded in {o}", "{s} started in {o}"),
             "the founding city of {s}"),
)
EXTRA_COMPOSITIONS = (
    ("birth_city", "city_river"), ("birth_city", "city_club"), ("birth_city", "city_airport"),
    ("employer", "company_rival"), ("employer", "company_founding_city"),
)


def build_world(args: argparse.Namespace) -> world_module.World:
    # conf/base/parameters_data_prep.yml, with --people and --world-seed
    config = WorldConfig(
        seed=args.world_seed, n_people=args.people, n_cities=100, n_countries=20, n_continents=6,
        n_companies=50, n_landmarks=100, n_first_names=60, n_last_names=60, n_place_parts=30,
        held_out_fraction=0.1,
    )
    world = generate_world(config)
    extra = [r for r in EXTRA_RELATIONS if r.name in args.second_hops]
    if not extra:
        return world
    # The extra entity types and facts are drawn after the default world, which stays as is.
    parts = world_module._name_parts(random.Random(args.world_seed + 7), 60)
    world.entities["river"] = [f"{p} River" for p in parts[:20]]
    world.entities["club"] = [f"{p} United" for p in parts[20:45]]
    world.entities["airport"] = [f"{p} Airport" for p in parts[45:60]]
    for relation in extra:
        RELATIONS[relation.name] = relation
    rng = random.Random(args.world_seed + 1)
    # Balanced draws as in the generator; a company can come out as its own rival here.
    for relation in extra:
        world.facts[relation.name] = world_module._balanced_assignment(
            rng, world.entities[relation.domain], world.entities[relation.range]
        )
    compositions = tuple((r1, r2) for r1, r2 in EXTRA_COMPOSITIONS if r2 in args.second_hops)
    world.config = dataclasses.replace(config, compositions=COMPOSITIONS + compositions)
    for r1, r2 in compositions:
        subjects = sorted(world.facts[r1])
        world.held_out[(r1, r2)] = set(rng.sample(subjects, round(config.held_out_fraction * len(subjects))))
    return world


def bios(world: world_module.World, per_person: int) -> list[str]:
    rng = random.Random(3)
    subject_first = {r: [t for t in RELATIONS[r].templates if t.startswith("{s}")] for r in ("birth_city", "employer")}
    out = []
    for person in world.entities["person"]:
        for _ in range(per_person):
            relations = ["birth_city", "employer"]
            rng.shuffle(relations)
            out.append(" . ".join(rng.choice(subject_first[r]).format(s=person, o=world.facts[r][person]) for r in relations))
    return out


def share_layers(k: int) -> None:
    """Make train_causal_lm build Llamas whose layer i uses the parameters of layer i mod k."""
    base = train_module.LlamaForCausalLM

    class SharedLayers(base):
        def __init__(self, config):
            super().__init__(config)
            for i in range(k, len(self.model.layers)):
                source = dict(self.model.layers[i % k].named_modules())
                for name, module in self.model.layers[i].named_modules():
                    for param in list(module._parameters):
                        module._parameters[param] = source[name]._parameters[param]

    train_module.LlamaForCausalLM = SharedLayers


def bridge_probe(model, tokenizer, world: world_module.World) -> dict[str, float]:
    """Decode the birth city at the mention's last token, held out by person, per layer."""
    two_hop = world.two_hop_table()
    rows = two_hop[two_hop["composition"] == "birth_city>city_country"].reset_index(drop=True)
    features = []
    for i in range(0, len(rows), 256):
        chunk = rows.iloc[i : i + 256]
        enc = tokenizer(chunk["prompt_two_hop"].tolist(), return_offsets_mapping=True, padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, output_hidden_states=True).hidden_states
        for j, end in enumerate(chunk["mention_end"]):
            pos = int(np.flatnonzero(enc.offset_mapping[j, :, 1].numpy() == end)[-1])
            features.append(torch.stack([h[j, pos] for h in hidden]).numpy())
    X, y, people = np.stack(features), rows["e2"].to_numpy(), rows["e1"].to_numpy()
    rng = np.random.default_rng(0)
    test = np.isin(people, rng.choice(people, len(people) // 4, replace=False))
    out = {"chance": float(pd.Series(y[test]).value_counts(normalize=True).iloc[0])}
    for layer in range(X.shape[1]):
        for name, labels in (("probe", y[~test]), ("shuffled", rng.permutation(y[~test]))):
            probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(X[~test, layer], labels)
            out[f"layer{layer}.{name}"] = round(float((probe.predict(X[test, layer]) == y[test]).mean()), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--more-second-hops", action="store_true", help="all five extra relations")
    parser.add_argument("--second-hops", nargs="+", default=[], choices=[r.name for r in EXTRA_RELATIONS])
    parser.add_argument("--people", type=int, default=3000)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--bios", type=int, default=0)
    parser.add_argument("--shared-layers", type=int, default=0)
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=5500)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--chains", type=int, default=150, help="chains evaluated per composition and split")
    args = parser.parse_args()
    if args.more_second_hops:
        args.second_hops = [r.name for r in EXTRA_RELATIONS]

    torch.manual_seed(0)
    world = build_world(args)
    corpus = world.corpus() + bios(world, args.bios)
    print(f"{len(corpus)} statements, {world.knowledge_bits():.0f} bits of knowledge")
    tokenizer = build_word_tokenizer(corpus)
    shape = ModelShape(hidden_size=args.width, num_layers=4, num_heads=4, intermediate_size=4 * args.width,
                       max_position_embeddings=64)
    config = TrainConfig(steps=args.steps, batch_size=128, learning_rate=0.003, warmup_steps=200,
                         weight_decay=args.weight_decay, seed=0, log_every=500)
    if args.shared_layers:
        share_layers(args.shared_layers)
    start = time.perf_counter()
    model, history = train_causal_lm(corpus, tokenizer, shape, config, progress=False)
    print(f"trained in {time.perf_counter() - start:.0f} s, final loss {history[-1]['loss']:.3f}")
    if args.shared_layers:  # untie, so generation's per-layer cache sees distinct layers
        for layer in model.model.layers[args.shared_layers :]:
            for module in layer.modules():
                for name, param in list(module._parameters.items()):
                    if param is not None:
                        module._parameters[name] = torch.nn.Parameter(param.detach().clone())

    print_composition(model, tokenizer, world, args.chains)
    print("bridge probe (birth city at the mention's end):", json.dumps(bridge_probe(model, tokenizer, world)))


if __name__ == "__main__":
    main()
