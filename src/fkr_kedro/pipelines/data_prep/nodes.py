"""Nodes of the data_prep pipeline: the evaluation prompts and calibration texts from the
chosen knowledge source (``knowledge.source``): the synthetic world, the project's world
facts, or the papers' datasets (LRE and TwoHopFact)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from fkr_kedro.knowledge.chance import chance_rates
from fkr_kedro.knowledge.download import fetch_file, fetch_zip_folder
from fkr_kedro.knowledge.lre import read_lre
from fkr_kedro.knowledge.twohopfact import read_twohopfact
from fkr_kedro.knowledge.world import WorldConfig, generate_world
from fkr_kedro.knowledge.world_facts import FACTS_VERSION, load_world_facts
from fkr_kedro.modeling.load import load_source_tokenizer

log = logging.getLogger(__name__)

KNOWLEDGE_SOURCES = ("synthetic", "world_facts", "lre_twohopfact")


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


def prepare_world_facts(evaluation_sample: dict) -> tuple[pd.DataFrame, pd.DataFrame, str, dict]:
    """The project's hand-written world facts: every fact and chain is evaluated (a few
    hundred); the calibration corpus is one statement per fact."""
    facts = load_world_facts()
    one_hop = sample_per_group(facts.one_hop_table(), ["relation"], evaluation_sample["max_per_relation"], evaluation_sample["seed"])
    two_hop = sample_per_group(facts.two_hop_table(), ["composition", "split"], evaluation_sample["max_per_composition"], evaluation_sample["seed"])
    corpus = facts.statements()
    summary = {
        "source": f"world facts v{FACTS_VERSION} (fkr_kedro/knowledge/data/world_facts.csv, hand-written)",
        "facts": one_hop.groupby("relation").size().to_dict(),
        "one_hop_facts": len(facts.facts),
        "two_hop_chains": two_hop.groupby(["composition", "split"]).size().unstack(fill_value=0).to_dict("index"),
        "two_hop_chance": chance_rates(two_hop).to_dict(),
        "knowledge_bits": facts.knowledge_bits(),
        "evaluation_prompts": {"one_hop": len(one_hop), "two_hop": len(two_hop)},
        "corpus_statements": len(corpus),
        "calibration_texts": "one statement per evaluated fact (the same facts the recall is measured on)",
    }
    log.info(
        "World facts v%s: %d one-hop facts over %d relations, %d two-hop chains over %d compositions",
        FACTS_VERSION, len(one_hop), one_hop["relation"].nunique(), len(two_hop), two_hop["composition"].nunique(),
    )
    return one_hop, two_hop, "\n".join(corpus) + "\n", summary


def prepare_paper_datasets(
    lre: dict, twohopfact: dict, base_model: dict, evaluation_sample: dict
) -> tuple[pd.DataFrame, pd.DataFrame, str, dict, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """LRE (one-hop) and TwoHopFact (two-hop) from local copies, downloaded into data/01_raw
    when missing and the network allows. Subjects are placed on the base model's tokens;
    what cannot be placed or mapped is returned in report tables, never dropped silently."""
    folder = fetch_zip_folder(lre["path"], lre.get("url"), lre.get("archive_folder", "data"), "LRE relations")
    tokenizer = load_source_tokenizer(base_model) if lre.get("place_on_tokens", True) else None
    report = read_lre(folder, lre.get("relation_types"), int(lre.get("template_index", 0)), tokenizer)
    csv_path = fetch_file(twohopfact["path"], twohopfact.get("url"), "TwoHopFact CSV")
    chains = read_twohopfact(csv_path)
    one_hop = sample_per_group(report.one_hop, ["relation"], evaluation_sample["max_per_relation"], evaluation_sample["seed"])
    two_hop = sample_per_group(chains.chains, ["composition", "split"], evaluation_sample["max_per_composition"], evaluation_sample["seed"])
    corpus = [f"{p} {o}." for p, o in zip(one_hop["prompt"], one_hop["object"])]
    summary = {
        "source": f"LRE ({folder}) and TwoHopFact ({Path(csv_path).name})",
        "lre": report.summary(),
        "twohopfact": chains.summary(),
        "facts": one_hop.groupby("relation").size().to_dict(),
        "two_hop_chains": two_hop.groupby(["composition", "split"]).size().unstack(fill_value=0).to_dict("index"),
        "two_hop_chance": chance_rates(two_hop).to_dict(),
        "evaluation_prompts": {"one_hop": len(one_hop), "two_hop": len(two_hop)},
        "corpus_statements": len(corpus),
        "calibration_texts": "one statement per evaluated LRE fact",
    }
    log.info(
        "LRE: %d facts in %d relations, %d placed, %d not placed (see lre_unplaced); TwoHopFact: %d chains, %d rejected",
        summary["lre"]["facts"], summary["lre"]["relations"], summary["lre"]["placed"], summary["lre"]["unplaced"],
        summary["twohopfact"]["chains"], summary["twohopfact"]["rejected"],
    )
    return one_hop, two_hop, "\n".join(corpus) + "\n", summary, report.counts, report.unplaced, chains.rejected


def sample_per_group(table: pd.DataFrame, by: list[str], max_rows: int, seed: int) -> pd.DataFrame:
    """At most ``max_rows`` rows of each group, drawn with a fixed seed; small groups whole."""
    shuffled = table.sample(frac=1.0, random_state=seed)
    return shuffled.groupby(by, sort=False).head(max_rows).sort_index().reset_index(drop=True)
