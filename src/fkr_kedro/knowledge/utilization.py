"""A knowledge-utilization task a small model can learn: in-context two-hop inference.

The first hop is stated in the prompt, the second must come from the model's stored facts:

    "Ponus Foga was born in Dalmar Vek ; Ponus Foga is from"
    -> country(Dalmar Vek), a fact the model only ever saw in one-hop statements.

Subjects are fictional people, drawn afresh for every statement, so the bridge can only be
read from the context, never recalled from the name. By default their names are built from
name parts of their own, which no world entity's name contains: every training statement
also states a random birth city or employer of its fictional person, and with the world's
first and last names those random facts would land on the tokens of the world's people's
names. (Measured: no clear effect on latent composition either way, within the large
draw-to-draw spread; docs/scaling.md.) ``subject_names: world_parts`` restores the shared
names.

Per composition, a fraction of the bridge entities (cities, companies) is **held out**: it
never appears in a training statement of this task, so answering a prompt about it means
applying the stored fact ``r2(bridge)`` in a new setting, which is knowledge put to use
rather than a memorized pattern. Prompts with seen bridges are kept as a diagnostic split.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd
from pydantic import ConfigDict, PositiveInt
from pydantic.dataclasses import dataclass as pydantic_dataclass

from .world import RELATIONS, World, name_parts

# First-hop statements use the first template ("{s} was born in {o}"), an ordinary
# sentence of the corpus. The question is short on purpose: training pads each batch to its
# longest statement, so long prompts would slow every step of training.
CONTEXT_TEMPLATE = 0
# Compositions whose first hop starts at a person (the subjects are fictional people).
QUESTIONS = {
    ("birth_city", "city_country"): "{s} is from",
    ("employer", "company_hq"): "{s} works in",
}
# Context and question are separate words for the word-level tokenizer.
SEPARATOR = " ; "

SPLITS = ("held_out_bridge", "seen_bridge")


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class InContextConfig:
    compositions: tuple[tuple[str, str], ...] = field(
        default=(("birth_city", "city_country"), ("employer", "company_hq"))
    )
    train_statements_per_composition: PositiveInt = 3000
    eval_prompts_per_composition: PositiveInt = 200  # per split
    held_out_bridge_fraction: float = 0.2
    # own_parts: fictional people named from name parts no world entity uses (the default);
    # world_parts: from the world's first and last names, in combinations no world person has.
    subject_names: Literal["own_parts", "world_parts"] = "own_parts"
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.held_out_bridge_fraction < 1.0:
            raise ValueError(f"held_out_bridge_fraction must lie in (0, 1), got {self.held_out_bridge_fraction}")
        for r1, r2 in self.compositions:
            if (r1, r2) not in QUESTIONS:
                raise ValueError(f"composition ({r1}, {r2}) has no in-context question; use one of {list(QUESTIONS)}")


@dataclass(frozen=True)
class InContextTask:
    train_statements: list[str]  # to add to the training corpus
    prompts: pd.DataFrame  # composition, subject, bridge, answer, prompt, answer_aliases, split


def fictional_people(world: World, subject_names: str = "own_parts") -> list[str]:
    """Names for the task's fictional people (sorted): see ``InContextConfig.subject_names``."""
    if subject_names == "own_parts":
        return _names_of_their_own(world)
    people = world.entities["person"]
    firsts = sorted({p.split(" ")[0] for p in people})
    lasts = sorted({p.split(" ")[1] for p in people})
    taken = set(people)
    free = [f"{a} {b}" for a in firsts for b in lasts if f"{a} {b}" not in taken]
    if not free:
        raise ValueError(
            "every combination of the world's name parts is a world person: raise n_first_names "
            "or n_last_names in the world's parameters so fictional people can be named"
        )
    return free


def _names_of_their_own(world: World) -> list[str]:
    """As many first and last name parts as the world has, none of them a word of any world
    entity's name, deterministic in the world's seed; every combination is a name."""
    taken = frozenset(word for names in world.entities.values() for name in names for word in name.split())
    n_first, n_last = world.config.n_first_names, world.config.n_last_names
    parts = name_parts(random.Random(f"fictional people {world.config.seed}"), n_first + n_last, exclude=taken)
    return sorted(f"{a} {b}" for a in parts[:n_first] for b in parts[n_first:])


def in_context_task(world: World, config: InContextConfig) -> InContextTask:
    """Training statements (seen bridges only) and evaluation prompts (held-out and seen
    bridges) for each composition, deterministic in ``config.seed``."""
    rng = random.Random(config.seed)
    names = fictional_people(world, config.subject_names)
    statements: list[str] = []
    rows: list[dict] = []
    for r1, r2 in config.compositions:
        bridges = sorted(world.entities[RELATIONS[r1].range])
        n_held = max(1, round(config.held_out_bridge_fraction * len(bridges)))
        if n_held >= len(bridges):
            raise ValueError(f"composition {r1}>{r2}: too few bridge entities ({len(bridges)}) to hold some out")
        held = set(rng.sample(bridges, n_held))
        seen = [b for b in bridges if b not in held]
        for _ in range(config.train_statements_per_composition):
            bridge = rng.choice(seen)
            statements.append(f"{_prompt(r1, r2, rng.choice(names), bridge)} {world.facts[r2][bridge]}")
        for split, pool in (("held_out_bridge", sorted(held)), ("seen_bridge", seen)):
            for _ in range(config.eval_prompts_per_composition):
                subject, bridge = rng.choice(names), rng.choice(pool)
                prompt = _prompt(r1, r2, subject, bridge)
                answer = world.facts[r2][bridge]
                rows.append(
                    {
                        "composition": f"{r1}>{r2}", "subject": subject, "bridge": bridge, "answer": answer,
                        "prompt": prompt, "answer_aliases": [answer], "split": split,
                    }
                )
    prompts = pd.DataFrame(rows).drop_duplicates(["prompt"]).reset_index(drop=True)
    return InContextTask(statements, prompts)


def _prompt(r1: str, r2: str, subject: str, bridge: str) -> str:
    context = RELATIONS[r1].templates[CONTEXT_TEMPLATE].format(s=subject, o=bridge)
    return f"{context}{SEPARATOR}{QUESTIONS[(r1, r2)].format(s=subject)}"
