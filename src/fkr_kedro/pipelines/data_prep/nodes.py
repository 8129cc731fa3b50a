"""Nodes of the data_prep pipeline: the synthetic knowledge world."""

from __future__ import annotations

import logging

import pandas as pd

from fkr_kedro.knowledge.world import WorldConfig, chance_rates, generate_world

log = logging.getLogger(__name__)


def generate_synthetic_world(
    world: WorldConfig, evaluation_sample: dict
) -> tuple[pd.DataFrame, pd.DataFrame, str, dict]:
    """Evaluation prompts (one-hop facts and two-hop chains, a seeded sample of at most
    ``evaluation_sample`` rows per relation, and per composition and split), the training
    corpus (every fact, one statement a line) and a summary with the knowledge load in bits."""
    generated = generate_world(world)
    corpus = generated.corpus()
    one_hop = sample_per_group(generated.one_hop_table(), ["relation"], evaluation_sample["max_per_relation"], evaluation_sample["seed"])
    two_hop = sample_per_group(generated.two_hop_table(), ["composition", "split"], evaluation_sample["max_per_composition"], evaluation_sample["seed"])
    summary = {
        "entities": {kind: len(names) for kind, names in generated.entities.items()},
        "facts": {relation: len(f) for relation, f in generated.facts.items()},
        "two_hop_chains": two_hop.groupby(["composition", "split"]).size().unstack(fill_value=0).to_dict("index"),
        "two_hop_chance": chance_rates(two_hop).to_dict(),
        "knowledge_bits": generated.knowledge_bits(),
        "one_hop_facts": sum(len(f) for f in generated.facts.values()),
        "evaluation_prompts": {"one_hop": len(one_hop), "two_hop": len(two_hop)},
        "corpus_statements": len(corpus),
    }
    log.info(
        "Synthetic world: %d one-hop facts (%.0f bits of knowledge), %d statements; evaluating %d facts and %d two-hop chains (%d held out)",
        summary["one_hop_facts"], summary["knowledge_bits"], len(corpus), len(one_hop), len(two_hop),
        int((two_hop["split"] == "held_out").sum()),
    )
    return one_hop, two_hop, "\n".join(corpus) + "\n", summary


def sample_per_group(table: pd.DataFrame, by: list[str], max_rows: int, seed: int) -> pd.DataFrame:
    """At most ``max_rows`` rows of each group, drawn with a fixed seed; small groups whole."""
    shuffled = table.sample(frac=1.0, random_state=seed)
    return shuffled.groupby(by, sort=False).head(max_rows).sort_index().reset_index(drop=True)
