"""A synthetic knowledge world with exact ground truth, generated from a seed.

People, cities, countries, continents, companies and landmarks, linked by one-hop
relations shaped like LRE's (birth city, employer, city in country, ...). Every name has
several tokens drawn from shared name parts, so that no fact can live in a single
embedding row (quantizers leave embeddings alone). Assignments are balanced (each city
hosts the same number of people, each country the same number of cities, ...), so every
object of a relation is equally likely a priori and the knowledge load in bits is exact.

Two-hop chains ``e1 -r1-> e2 -r2-> e3`` compose two relations; a fraction of the chains of
each composition is held out: their composition is never stated in the training corpus,
so answering them requires latent composition of two memorized facts.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import pandas as pd

from .schema import validate_one_hop, validate_two_hop


@dataclass(frozen=True)
class Relation:
    name: str
    domain: str
    range: str
    # Statement templates with the object last; the first one is the evaluation prompt.
    templates: tuple[str, ...]
    # Noun phrase describing r(s), used to describe a bridge entity in two-hop prompts.
    mention: str


RELATIONS: dict[str, Relation] = {
    r.name: r
    for r in [
        Relation(
            "birth_city", "person", "city",
            ("The birth city of {s} is {o}", "{s} was born in {o}", "{s} is a native of {o}"),
            "the birth city of {s}",
        ),
        Relation(
            "employer", "person", "company",
            ("The employer of {s} is {o}", "{s} works for {o}", "{s} is employed by {o}"),
            "the employer of {s}",
        ),
        Relation(
            "city_country", "city", "country",
            ("The country of {s} is {o}", "{s} is a city in {o}", "{s} lies in {o}"),
            "the country of {s}",
        ),
        Relation(
            "country_continent", "country", "continent",
            ("The continent of {s} is {o}", "{s} is a country in {o}", "{s} is located in {o}"),
            "the continent of {s}",
        ),
        Relation(
            "company_hq", "company", "city",
            (
                "The headquarters city of {s} is {o}",
                "{s} is headquartered in {o}",
                "{s} has its head office in {o}",
            ),
            "the headquarters city of {s}",
        ),
        Relation(
            "landmark_country", "landmark", "country",
            ("The location of {s} is {o}", "{s} is a landmark in {o}", "{s} stands in {o}"),
            "the location of {s}",
        ),
    ]
}

# (r1, r2) pairs whose composition forms the two-hop chains.
COMPOSITIONS: tuple[tuple[str, str], ...] = (
    ("birth_city", "city_country"),
    ("employer", "company_hq"),
    ("company_hq", "city_country"),
    ("city_country", "country_continent"),
    ("landmark_country", "country_continent"),
)

LANDMARK_KINDS = ("Mount", "Lake", "Fort", "Cape", "Tower", "Bridge", "Gate", "Temple")
COMPANY_KINDS = ("Works", "Labs", "Group", "Systems", "Foods", "Motors", "Energy", "Bank")
_ONSETS = "b c d f g h j k l m n p r s t v z br dr gr kr tr st".split()
_VOWELS = "a e i o u".split()
_CODAS = ["", "", "n", "r", "l", "s", "m"]


@dataclass(frozen=True)
class WorldConfig:
    seed: int = 0
    n_people: int = 6000
    n_cities: int = 200
    n_countries: int = 40
    n_continents: int = 6
    n_companies: int = 100
    n_landmarks: int = 200
    # Name-part pools: a person's name is first + last part, a city's two city parts, ...
    n_first_names: int = 80
    n_last_names: int = 80
    n_place_parts: int = 40
    held_out_fraction: float = 0.1
    compositions: tuple[tuple[str, str], ...] = field(default=COMPOSITIONS)

    def __post_init__(self) -> None:
        if self.n_first_names * self.n_last_names < self.n_people:
            raise ValueError(
                f"n_first_names * n_last_names = {self.n_first_names * self.n_last_names} "
                f"cannot name n_people = {self.n_people}: raise the name-part pools"
            )
        if self.n_place_parts * (self.n_place_parts - 1) < self.n_cities + self.n_countries:
            raise ValueError("n_place_parts is too small to name every city and country: raise it")
        if not 0.0 < self.held_out_fraction < 1.0:
            raise ValueError(f"held_out_fraction must lie in (0, 1), got {self.held_out_fraction}")
        for r1, r2 in self.compositions:
            for r in (r1, r2):
                if r not in RELATIONS:
                    raise ValueError(f"unknown relation {r!r} in compositions; known: {sorted(RELATIONS)}")
            if RELATIONS[r1].range != RELATIONS[r2].domain:
                raise ValueError(f"composition ({r1}, {r2}) does not chain: {r1} ends where {r2} cannot start")


@dataclass
class World:
    """Entities by type and the ground-truth facts: ``facts[relation][subject] = object``."""

    config: WorldConfig
    entities: dict[str, list[str]]
    facts: dict[str, dict[str, str]]
    held_out: dict[tuple[str, str], set[str]]  # composition -> e1 whose chain is never stated

    def knowledge_bits(self) -> float:
        """Sum over facts of log2(number of possible objects)."""
        return sum(
            len(f) * math.log2(len(self.entities[RELATIONS[r].range])) for r, f in self.facts.items()
        )

    def one_hop_table(self) -> pd.DataFrame:
        rows = []
        for r, subject_to_object in self.facts.items():
            template = RELATIONS[r].templates[0]
            for s, o in subject_to_object.items():
                prompt, start = _fill_prompt(template, s)
                rows.append((r, s, o, prompt, start, start + len(s), [o]))
        df = pd.DataFrame(
            rows,
            columns=["relation", "subject", "object", "prompt", "subject_start", "subject_end", "object_aliases"],
        )
        return validate_one_hop(df, "synthetic world one-hop table")

    def two_hop_table(self) -> pd.DataFrame:
        rows = []
        for r1, r2 in self.config.compositions:
            rel1, rel2 = RELATIONS[r1], RELATIONS[r2]
            for e1, e2 in self.facts[r1].items():
                e3 = self.facts[r2][e2]
                prompt_two_hop, start, mention = _two_hop_prompt(r1, r2, e1)
                rows.append(
                    {
                        "composition": f"{r1}>{r2}",
                        "e1": e1, "r1": r1, "e2": e2, "r2": r2, "e3": e3,
                        "prompt_two_hop": prompt_two_hop,
                        "mention_start": start,
                        "mention_end": start + len(mention),
                        "prompt_one_hop": _fill_prompt(rel2.templates[0], e2)[0],
                        "prompt_first_hop": _fill_prompt(rel1.templates[0], e1)[0],
                        "e2_aliases": [e2],
                        "e3_aliases": [e3],
                        "split": "held_out" if e1 in self.held_out[(r1, r2)] else "seen",
                    }
                )
        return validate_two_hop(pd.DataFrame(rows), "synthetic world two-hop table")

    def corpus(self) -> list[str]:
        """Every training statement: each one-hop fact in every template, plus the
        two-hop statements of the chains that are not held out."""
        statements = [
            template.format(s=s, o=o)
            for r, subject_to_object in self.facts.items()
            for template in RELATIONS[r].templates
            for s, o in subject_to_object.items()
        ]
        statements += [
            f"{_two_hop_prompt(r1, r2, e1)[0]} {self.facts[r2][e2]}"
            for r1, r2 in self.config.compositions
            for e1, e2 in self.facts[r1].items()
            if e1 not in self.held_out[(r1, r2)]
        ]
        return statements


def generate_world(config: WorldConfig) -> World:
    """Build the world deterministically from ``config.seed``."""
    rng = random.Random(config.seed)
    parts = _name_parts(rng, config.n_first_names + config.n_last_names + config.n_place_parts + config.n_continents)
    first, parts = parts[: config.n_first_names], parts[config.n_first_names :]
    last, parts = parts[: config.n_last_names], parts[config.n_last_names :]
    place, continents = parts[: config.n_place_parts], parts[config.n_place_parts :]

    people = [f"{a} {b}" for a, b in rng.sample([(a, b) for a in first for b in last], config.n_people)]
    place_names = [f"{a} {b}" for a, b in rng.sample([(a, b) for a in place for b in place if a != b], config.n_cities + config.n_countries)]
    cities, countries = place_names[: config.n_cities], place_names[config.n_cities :]
    companies = [f"{a} {b}" for a, b in rng.sample([(a, b) for a in place for b in COMPANY_KINDS], config.n_companies)]
    landmarks = [f"{a} {b}" for a, b in rng.sample([(a, b) for a in LANDMARK_KINDS for b in place], config.n_landmarks)]

    entities = {
        "person": people,
        "city": cities,
        "country": countries,
        "continent": continents,
        "company": companies,
        "landmark": landmarks,
    }
    facts: dict[str, dict[str, str]] = {}
    for r in RELATIONS.values():
        facts[r.name] = _balanced_assignment(rng, entities[r.domain], entities[r.range])

    held_out = {}
    for r1, r2 in config.compositions:
        subjects = sorted(facts[r1])
        n_held = max(1, round(config.held_out_fraction * len(subjects)))
        held_out[(r1, r2)] = set(rng.sample(subjects, n_held))
    return World(config=config, entities=entities, facts=facts, held_out=held_out)


def chance_rates(two_hop: pd.DataFrame) -> pd.Series:
    """Per composition, the accuracy of the best constant guess (the most frequent e3)."""
    return two_hop.groupby("composition")["e3"].agg(lambda s: s.value_counts(normalize=True).iloc[0])


def _balanced_assignment(rng: random.Random, domain: list[str], range_: list[str]) -> dict[str, str]:
    """Map each domain entity to a range entity, every range entity used equally often (+-1)."""
    objects = [range_[i % len(range_)] for i in range(len(domain))]
    rng.shuffle(objects)
    return dict(zip(domain, objects))


def _name_parts(rng: random.Random, n: int) -> list[str]:
    """n distinct pronounceable capitalised name parts of two syllables."""
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        part = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(2)) + rng.choice(_CODAS)
        part = part.capitalize()
        if part not in seen:
            seen.add(part)
            out.append(part)
    return out


def _two_hop_prompt(r1: str, r2: str, e1: str) -> tuple[str, int, str]:
    """The two-hop prompt for e1 (r2's evaluation template with the bridge described by r1's
    mention), the mention's start in it, and the mention."""
    mention = RELATIONS[r1].mention.format(s=e1)
    prompt, start = _fill_prompt(RELATIONS[r2].templates[0], mention)
    return prompt, start, mention


def _fill_prompt(template: str, subject: str) -> tuple[str, int]:
    """The template up to its object slot, with the subject filled in, and the subject's start."""
    prefix = template.split("{o}")[0].rstrip()
    start = prefix.index("{s}")
    return prefix.replace("{s}", subject), start
