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

The two-hop grammar decides where a causal model can resolve the bridge. The corpus states
every first hop as "The birth city of Ponus Foga is Kato Rilan", so the model learns to
produce the bridge right after "<mention> is". In the default ``predicate`` grammar the
two-hop prompt extends exactly that prompt with the second hop's predicate, as in
"Kato Rilan is in Bemo Tak":

    "The birth city of Ponus Foga is in"  ->  the country of Ponus Foga's birth city

Up to its "is" the model reads the one-hop prompt whose next token is the bridge, so it
resolves the bridge there for every chain, held out or not, and composition needs only the
second hop applied to it (``docs/results.md`` measures this against the ``nested`` grammar,
"The country of the birth city of Ponus Foga is", where the second relation comes first and
held-out chains stay near chance). Evaluation prompts of one-hop facts use each relation's
first, subject-first template ("Ponus Foga was born in"), which no two-hop prompt extends.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import pandas as pd
from pydantic import ConfigDict, PositiveInt
from pydantic.dataclasses import dataclass as pydantic_dataclass

from .schema import validate_one_hop, validate_two_hop


def _capitalize(text: str) -> str:
    """The text with its first letter upper-cased (``str.capitalize`` would lower the rest)."""
    return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class Relation:
    name: str
    domain: str
    range: str
    # Statement templates with the object last; the first one is the evaluation prompt.
    templates: tuple[str, ...]
    # Noun phrase describing r(s), used to describe a bridge entity in two-hop prompts; the
    # templates state "<Mention> is {o}", so the object is named right after the mention.
    mention: str
    # The template whose prompt follows the bridge's mention when this relation is the second
    # hop ("{s} is in {o}": "The birth city of Ponus Foga is in").
    predicate: str

    def __post_init__(self) -> None:
        if self.mention_statement not in self.templates:
            raise ValueError(f"{self.name}: the templates must state the mention, {self.mention_statement!r}")
        if self.predicate not in self.templates or not self.predicate.startswith("{s} "):
            raise ValueError(f"{self.name}: the predicate {self.predicate!r} must be a subject-first template")
        if self.templates[0] == self.mention_statement:
            raise ValueError(f"{self.name}: the evaluation template must not be the mention statement, which two-hop prompts extend")

    @property
    def mention_statement(self) -> str:
        """ "The birth city of {s} is {o}": the statement that names r(s) right after its mention."""
        return f"{_capitalize(self.mention)} is {{o}}"


RELATIONS: dict[str, Relation] = {
    r.name: r
    for r in [
        Relation(
            "birth_city", "person", "city",
            ("{s} was born in {o}", "The birth city of {s} is {o}", "{s} is a native of {o}"),
            "the birth city of {s}", "{s} was born in {o}",
        ),
        Relation(
            "employer", "person", "company",
            ("{s} works for {o}", "The employer of {s} is {o}", "{s} is employed by {o}"),
            "the employer of {s}", "{s} works for {o}",
        ),
        Relation(
            "city_country", "city", "country",
            ("{s} is a city in {o}", "The country of {s} is {o}", "{s} is in {o}"),
            "the country of {s}", "{s} is in {o}",
        ),
        Relation(
            "country_continent", "country", "continent",
            ("{s} is a country in {o}", "The continent of {s} is {o}", "{s} is in {o}"),
            "the continent of {s}", "{s} is in {o}",
        ),
        Relation(
            "company_hq", "company", "city",
            (
                "{s} has its head office in {o}",
                "The headquarters city of {s} is {o}",
                "{s} is headquartered in {o}",
            ),
            "the headquarters city of {s}", "{s} is headquartered in {o}",
        ),
        Relation(
            "landmark_country", "landmark", "country",
            ("{s} stands in {o}", "The location of {s} is {o}", "{s} is a landmark in {o}"),
            "the location of {s}", "{s} stands in {o}",
        ),
    ]
}

TWO_HOP_GRAMMARS = ("predicate", "nested")

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


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class WorldConfig:
    """The world's size and grammar (``world`` in parameters_data_prep.yml); counts >= 1."""

    seed: int = 0
    n_people: PositiveInt = 3000
    n_cities: PositiveInt = 100
    n_countries: PositiveInt = 20
    n_continents: PositiveInt = 6
    n_companies: PositiveInt = 50
    n_landmarks: PositiveInt = 100
    # Name-part pools: a person's name is first + last part, a city's two city parts, ...
    n_first_names: PositiveInt = 60
    n_last_names: PositiveInt = 60
    n_place_parts: PositiveInt = 30
    held_out_fraction: float = 0.1
    compositions: tuple[tuple[str, str], ...] = field(default=COMPOSITIONS)
    # "predicate": "The birth city of Ponus Foga is in"; "nested": "The country of the birth
    # city of Ponus Foga is" (see the module docstring).
    two_hop_grammar: str = "predicate"

    def __post_init__(self) -> None:
        if self.n_first_names * self.n_last_names < self.n_people:
            raise ValueError(
                f"n_first_names * n_last_names = {self.n_first_names * self.n_last_names} "
                f"cannot name n_people = {self.n_people}: raise the name-part pools"
            )
        if self.n_place_parts * (self.n_place_parts - 1) < self.n_cities + self.n_countries:
            raise ValueError("n_place_parts is too small to name every city and country: raise it")
        if self.two_hop_grammar not in TWO_HOP_GRAMMARS:
            raise ValueError(f"two_hop_grammar must be one of {TWO_HOP_GRAMMARS}, got {self.two_hop_grammar!r}")
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
                prompt_two_hop, start, mention = _two_hop_prompt(r1, r2, e1, self.config.two_hop_grammar)
                rows.append(
                    {
                        "composition": f"{r1}>{r2}",
                        "e1": e1, "r1": r1, "e2": e2, "r2": r2, "e3": e3,
                        "prompt_two_hop": prompt_two_hop,
                        "mention_start": start,
                        "mention_end": start + len(mention),
                        "prompt_one_hop": _fill_prompt(_second_hop_template(rel2, self.config.two_hop_grammar), e2)[0],
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
            f"{_two_hop_prompt(r1, r2, e1, self.config.two_hop_grammar)[0]} {self.facts[r2][e2]}"
            for r1, r2 in self.config.compositions
            for e1, e2 in self.facts[r1].items()
            if e1 not in self.held_out[(r1, r2)]
        ]
        return statements


def generate_world(config: WorldConfig) -> World:
    """Build the world deterministically from ``config.seed``."""
    rng = random.Random(config.seed)
    parts = name_parts(rng, config.n_first_names + config.n_last_names + config.n_place_parts + config.n_continents)
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


def _balanced_assignment(rng: random.Random, domain: list[str], range_: list[str]) -> dict[str, str]:
    """Map each domain entity to a range entity, every range entity used equally often (+-1)."""
    objects = [range_[i % len(range_)] for i in range(len(domain))]
    rng.shuffle(objects)
    return dict(zip(domain, objects))


def name_parts(rng: random.Random, n: int, exclude: frozenset[str] = frozenset()) -> list[str]:
    """n distinct pronounceable capitalised name parts of two syllables, none in ``exclude``."""
    seen: set[str] = set(exclude)
    out: list[str] = []
    while len(out) < n:
        part = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(2)) + rng.choice(_CODAS)
        part = part.capitalize()
        if part not in seen:
            seen.add(part)
            out.append(part)
    return out


def _second_hop_template(relation: Relation, grammar: str) -> str:
    """The template of the second hop whose subject slot takes the bridge or its mention:
    the same wording in the two-hop prompt and in its matching one-hop prompt."""
    return relation.predicate if grammar == "predicate" else relation.mention_statement


def _two_hop_prompt(r1: str, r2: str, e1: str, grammar: str) -> tuple[str, int, str]:
    """The two-hop prompt for e1 (r2's second-hop template with the bridge described by r1's
    mention), the mention's start in it, and the mention as it appears there."""
    mention = RELATIONS[r1].mention.format(s=e1)
    template = _second_hop_template(RELATIONS[r2], grammar)
    if template.startswith("{s}"):
        mention = _capitalize(mention)
    prompt, start = _fill_prompt(template, mention)
    return prompt, start, mention


def _fill_prompt(template: str, subject: str) -> tuple[str, int]:
    """The template up to its object slot, with the subject filled in, and the subject's start."""
    prefix = template.split("{o}")[0].rstrip()
    start = prefix.index("{s}")
    return prefix.replace("{s}", subject), start
