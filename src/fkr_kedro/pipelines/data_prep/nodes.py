"""Nodes of the data_prep pipeline: the synthetic knowledge world."""

from __future__ import annotations

import logging

import pandas as pd

from fkr_kedro.knowledge.world import WorldConfig, chance_rates, generate_world

log = logging.getLogger(__name__)


def generate_synthetic_world(world: WorldConfig) -> tuple[pd.DataFrame, pd.DataFrame, str, dict]:
    """One-hop prompts, two-hop chains, the training corpus (one statement a line) and a
    summary with the knowledge load in bits."""
    generated = generate_world(world)
    one_hop, two_hop, corpus = generated.one_hop_table(), generated.two_hop_table(), generated.corpus()
    summary = {
        "entities": {kind: len(names) for kind, names in generated.entities.items()},
        "facts": {relation: len(f) for relation, f in generated.facts.items()},
        "two_hop_chains": two_hop.groupby(["composition", "split"]).size().unstack(fill_value=0).to_dict("index"),
        "two_hop_chance": chance_rates(two_hop).to_dict(),
        "knowledge_bits": generated.knowledge_bits(),
        "corpus_statements": len(corpus),
    }
    log.info(
        "Synthetic world: %d one-hop facts (%.0f bits of knowledge), %d two-hop chains (%d held out), %d statements",
        len(one_hop), summary["knowledge_bits"], len(two_hop), int((two_hop["split"] == "held_out").sum()), len(corpus),
    )
    return one_hop, two_hop, "\n".join(corpus) + "\n", summary
