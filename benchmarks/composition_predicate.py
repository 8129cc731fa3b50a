"""Experiment (not a test): two-hop prompts that extend the first hop's own prompt.

Default grammar: "The country of the birth city of Ponus Foga is" (the second relation is
named before the bridge's mention). Predicate grammar: "The birth city of Ponus Foga is in",
the first hop's one-hop prompt ("The birth city of Ponus Foga is") followed by the second
relation's predicate ("in", as in "Kato Rilan is in Bemo Tak"). Up to its "is", a causal
model reads exactly the one-hop prompt whose next token is the bridge, so it resolves the
bridge there on every chain, held out or not; composition then needs only the second hop
applied to that resolved bridge, which the seen chains train for every bridge.

Prints composition per composition and split beside chance, and a bridge probe (e2's
identity, held out by e1) at the mention's last token, at the first hop's "is" and at the
last token.

    OMP_NUM_THREADS=1 python benchmarks/composition_predicate.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import fkr_kedro.knowledge.world as world_module
from composition_grammar import print_composition  # benchmarks/ is on the path when run as a script
from fkr_kedro.knowledge.world import RELATIONS, WorldConfig, generate_world
from fkr_kedro.modeling.tokenizer import build_word_tokenizer
from fkr_kedro.modeling.train import ModelShape, TrainConfig, train_causal_lm

# r2's predicate after "is", and the one-hop template that states it.
PREDICATES = {
    "city_country": ("in", ("The country of {s} is {o}", "{s} is in {o}", "{s} is a city in {o}")),
    "company_hq": ("headquartered in", None),
    "country_continent": ("in", ("The continent of {s} is {o}", "{s} is in {o}", "{s} is a country in {o}")),
}


def use_predicate_grammar() -> None:
    for name, (_, templates) in PREDICATES.items():
        if templates:
            RELATIONS[name] = dataclasses.replace(RELATIONS[name], templates=templates)

    def two_hop_prompt(r1: str, r2: str, e1: str) -> tuple[str, int, str]:
        first_hop, start = world_module._fill_prompt(RELATIONS[r1].templates[0], e1)
        # The mention is the first hop's noun phrase: "The birth city of Ponus Foga".
        mention = first_hop[: first_hop.rindex(" is")]
        return f"{first_hop} {PREDICATES[r2][0]}", 0, mention

    world_module._two_hop_prompt = two_hop_prompt


# Subject-first templates of each second hop whose verb is not "is", so that the two-hop
# prompt ("The birth city of Ponus Foga lies in") never extends a one-hop prompt.
SUBJECT_FIRST = {
    "city_country": "{s} lies in {o}",
    "company_hq": "{s} has its head office in {o}",
    "country_continent": "{s} belongs to {o}",
}


def use_subject_first_grammar() -> None:
    RELATIONS["country_continent"] = dataclasses.replace(
        RELATIONS["country_continent"],
        templates=("The continent of {s} is {o}", "{s} is a country in {o}", "{s} belongs to {o}"),
    )

    def two_hop_prompt(r1: str, r2: str, e1: str) -> tuple[str, int, str]:
        first_hop, start = world_module._fill_prompt(RELATIONS[r1].templates[0], e1)
        mention = first_hop[: first_hop.rindex(" is")]
        prompt, _ = world_module._fill_prompt(SUBJECT_FIRST[r2], mention)
        return prompt, 0, mention

    world_module._two_hop_prompt = two_hop_prompt
    original = world_module.World.two_hop_table

    def two_hop_table(self):
        table = original(self)
        # The matching one-hop prompt uses the same wording: "Kato Rilan lies in".
        table["prompt_one_hop"] = [world_module._fill_prompt(SUBJECT_FIRST[r2], e2)[0] for r2, e2 in zip(table["r2"], table["e2"])]
        return table

    world_module.World.two_hop_table = two_hop_table


# Predicate grammar, v2: every relation's evaluation prompt (template 0) is subject-first and
# its "The X of {s} is {o}" statement comes second; the two-hop prompt extends that second
# statement's prompt with the second hop's predicate ("is in", "is headquartered in").
EVAL_FIRST = {
    "birth_city": ("{s} was born in {o}", "The birth city of {s} is {o}", "{s} is a native of {o}"),
    "employer": ("{s} works for {o}", "The employer of {s} is {o}", "{s} is employed by {o}"),
    "city_country": ("{s} is a city in {o}", "The country of {s} is {o}", "{s} is in {o}"),
    "country_continent": ("{s} is a country in {o}", "The continent of {s} is {o}", "{s} is in {o}"),
    "company_hq": ("{s} has its head office in {o}", "The headquarters city of {s} is {o}", "{s} is headquartered in {o}"),
    "landmark_country": ("{s} stands in {o}", "The location of {s} is {o}", "{s} is a landmark in {o}"),
}
PREDICATE_TEMPLATE = {"city_country": "{s} is in {o}", "company_hq": "{s} is headquartered in {o}", "country_continent": "{s} is in {o}"}


def use_predicate2_grammar() -> None:
    for name, templates in EVAL_FIRST.items():
        RELATIONS[name] = dataclasses.replace(RELATIONS[name], templates=templates)

    def two_hop_prompt(r1: str, r2: str, e1: str) -> tuple[str, int, str]:
        statement, _ = world_module._fill_prompt(RELATIONS[r1].templates[1], e1)  # "The birth city of P is"
        mention = statement[: statement.rindex(" is")]
        prompt, _ = world_module._fill_prompt(PREDICATE_TEMPLATE[r2], mention)
        return prompt, 0, mention

    world_module._two_hop_prompt = two_hop_prompt
    original = world_module.World.two_hop_table

    def two_hop_table(self):
        table = original(self)
        table["prompt_one_hop"] = [world_module._fill_prompt(PREDICATE_TEMPLATE[r2], e2)[0] for r2, e2 in zip(table["r2"], table["e2"])]
        return table

    world_module.World.two_hop_table = two_hop_table


def bridge_probe(model, tokenizer, world, compositions) -> dict:
    two_hop = world.two_hop_table()
    rows = two_hop[two_hop["composition"].isin(compositions)].reset_index(drop=True)
    feats = {"mention": [], "is": [], "last": []}
    for i in range(0, len(rows), 256):
        chunk = rows.iloc[i : i + 256]
        enc = tokenizer(chunk["prompt_two_hop"].tolist(), return_offsets_mapping=True, padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = torch.stack(model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, output_hidden_states=True).hidden_states, 1)
        for j, end in enumerate(chunk["mention_end"]):
            pos = int(np.flatnonzero(enc.offset_mapping[j, :, 1].numpy() == end)[-1])
            feats["mention"].append(hidden[j, :, pos].numpy())
            feats["is"].append(hidden[j, :, pos + 1].numpy())
            feats["last"].append(hidden[j, :, -1].numpy())
    y, people = rows["e2"].to_numpy(), rows["e1"].to_numpy()
    rng = np.random.default_rng(0)
    test = np.isin(people, rng.choice(np.unique(people), len(np.unique(people)) // 4, replace=False))
    out = {"chance": round(float(pd.Series(y[test]).value_counts(normalize=True).iloc[0]), 3)}
    for site, X in feats.items():
        X = np.stack(X)
        for layer in range(X.shape[1]):
            for name, labels in (("probe", y[~test]), ("shuffled", rng.permutation(y[~test]))):
                probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(X[~test, layer], labels)
                out[f"{site}.L{layer}.{name}"] = round(float((probe.predict(X[test, layer]) == y[test]).mean()), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grammar", choices=["default", "predicate", "subject-first", "predicate2"], default="predicate")
    parser.add_argument("--people", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=5500)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--chains", type=int, default=150)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=64)
    args = parser.parse_args()
    if args.grammar == "predicate":
        use_predicate_grammar()
    elif args.grammar == "predicate2":
        use_predicate2_grammar()
    elif args.grammar == "subject-first":
        use_subject_first_grammar()
    torch.manual_seed(0)
    world = generate_world(WorldConfig(
        seed=0, n_people=args.people, n_cities=100, n_countries=20, n_continents=6, n_companies=50,
        n_landmarks=100, n_first_names=60, n_last_names=60, n_place_parts=30, held_out_fraction=0.1,
    ))
    corpus = world.corpus()
    print(f"{len(corpus)} statements; e.g. {world.two_hop_table()['prompt_two_hop'].iloc[0]!r}")
    tokenizer = build_word_tokenizer(corpus)
    shape = ModelShape(hidden_size=args.width, num_layers=args.layers, num_heads=4, intermediate_size=4 * args.width, max_position_embeddings=64)
    config = TrainConfig(steps=args.steps, batch_size=128, learning_rate=0.003, warmup_steps=200,
                         weight_decay=args.weight_decay, seed=0, log_every=500)
    start = time.perf_counter()
    model, history = train_causal_lm(corpus, tokenizer, shape, config, progress=False)
    print(f"trained in {time.perf_counter() - start:.0f} s, final loss {history[-1]['loss']:.3f}")
    print_composition(model, tokenizer, world, args.chains)
    print("bridge probe:", json.dumps(bridge_probe(model, tokenizer, world, ["birth_city>city_country", "employer>company_hq"])))
    model.save_pretrained(f"/tmp/exp/model_{args.grammar}_{args.weight_decay}_{args.steps}_{args.layers}")
    tokenizer.save_pretrained(f"/tmp/exp/model_{args.grammar}_{args.weight_decay}_{args.steps}_{args.layers}")


if __name__ == "__main__":
    main()
