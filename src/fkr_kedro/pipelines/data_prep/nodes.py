"""Nodes of the data_prep pipeline: the evaluation prompts and calibration texts from the
chosen knowledge sources (``knowledge``): the synthetic world, the project's world
facts, or the papers' datasets (LRE and TwoHopFact)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from fkr_kedro.knowledge.download import fetch_file, fetch_zip_folder
from fkr_kedro.knowledge.lre import read_lre
from fkr_kedro.knowledge.schema import empty_one_hop, empty_two_hop, prompt_summary, sample_per_group
from fkr_kedro.knowledge.twohopfact import read_twohopfact, simulate_twohopfact, write_twohopfact_csv
from fkr_kedro.knowledge.world import WorldConfig, generate_world
from fkr_kedro.knowledge.world_facts import FACTS_VERSION, load_world_facts
from fkr_kedro.modeling.load import ModelSource, load_source_tokenizer
from fkr_kedro.parameters import EvaluationSample, KnowledgeSettings, LreSettings, TwoHopFactSettings

log = logging.getLogger(__name__)


def _sample(one_hop: pd.DataFrame, two_hop: pd.DataFrame, sample: EvaluationSample) -> tuple[pd.DataFrame, pd.DataFrame]:
    return (
        sample_per_group(one_hop, ["relation"], sample.max_per_relation, sample.seed),
        sample_per_group(two_hop, ["composition", "split"], sample.max_per_composition, sample.seed),
    )


def generate_synthetic_world(
    world: WorldConfig, evaluation_sample: EvaluationSample
) -> tuple[pd.DataFrame, pd.DataFrame, str, dict, pd.DataFrame]:
    """Evaluation prompts (one-hop facts and two-hop chains, a seeded sample of at most
    ``evaluation_sample`` rows per relation, and per composition and split), the training
    corpus (every fact, one statement a line), a summary with the knowledge load in bits, and
    every one-hop fact (the knowledge-bits estimate sums over all of them)."""
    generated = generate_world(world)
    corpus = generated.corpus()
    facts = generated.one_hop_table()
    one_hop, two_hop = _sample(facts, generated.two_hop_table(), evaluation_sample)
    prompts = prompt_summary(one_hop, two_hop)
    summary = {
        "entities": {kind: len(names) for kind, names in generated.entities.items()},
        "facts": {relation: len(f) for relation, f in generated.facts.items()},
        "two_hop_chains": prompts["two_hop_chains"],
        "two_hop_chance": prompts["two_hop_chance"],
        "knowledge_bits": generated.knowledge_bits(),
        "one_hop_facts": sum(len(f) for f in generated.facts.values()),
        "evaluation_prompts": prompts["evaluation_prompts"],
        "corpus_statements": len(corpus),
    }
    log.info(
        "Synthetic world: %d one-hop facts (%.0f bits of knowledge), %d statements; evaluating %d facts and %d two-hop chains (%d held out)",
        summary["one_hop_facts"], summary["knowledge_bits"], len(corpus), len(one_hop), len(two_hop),
        int((two_hop["split"] == "held_out").sum()),
    )
    return one_hop, two_hop, "\n".join(corpus) + "\n", summary, facts


def prepare_world_facts(evaluation_sample: EvaluationSample) -> tuple[pd.DataFrame, pd.DataFrame, str, dict, pd.DataFrame]:
    """The project's hand-written world facts: every fact and chain is evaluated (a few
    hundred); the calibration corpus is one statement per fact."""
    facts = load_world_facts()
    all_one_hop = facts.one_hop_table()
    one_hop, two_hop = _sample(all_one_hop, facts.two_hop_table(), evaluation_sample)
    corpus = facts.statements()
    prompts = prompt_summary(one_hop, two_hop)
    summary = {
        "source": f"world facts v{FACTS_VERSION} (fkr_kedro/knowledge/data/world_facts.csv, hand-written)",
        "facts": one_hop.groupby("relation").size().to_dict(),
        "one_hop_facts": len(facts.facts),
        "two_hop_chains": prompts["two_hop_chains"],
        "two_hop_chance": prompts["two_hop_chance"],
        "knowledge_bits": facts.knowledge_bits(),
        "evaluation_prompts": prompts["evaluation_prompts"],
        "corpus_statements": len(corpus),
        "calibration_texts": "one statement per evaluated fact (the same facts the recall is measured on)",
    }
    log.info(
        "World facts v%s: %d one-hop facts over %d relations, %d two-hop chains over %d compositions",
        FACTS_VERSION, len(one_hop), one_hop["relation"].nunique(), len(two_hop), two_hop["composition"].nunique(),
    )
    return one_hop, two_hop, "\n".join(corpus) + "\n", summary, all_one_hop


def prepare_knowledge_sources(
    knowledge: KnowledgeSettings,
    lre: LreSettings,
    twohopfact: TwoHopFactSettings,
    base_model: ModelSource,
    evaluation_sample: EvaluationSample,
) -> tuple[pd.DataFrame, pd.DataFrame, str, dict, pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """One-hop prompts from ``knowledge.one_hop`` (LRE, the world facts or none) and two-hop
    chains from ``knowledge.two_hop`` (TwoHopFact, the world facts or none), each read from a
    local copy (downloaded into data/01_raw when missing and the network allows). LRE subjects
    are placed on the base model's tokens; what cannot be placed or mapped is returned in
    report tables, never dropped silently. Calibration texts are one statement per evaluated
    one-hop fact (or, without one-hop prompts, per chain)."""
    sources, summary = [], {}
    lre_counts = lre_unplaced = twohopfact_rejected = pd.DataFrame()
    facts = load_world_facts() if "world_facts" in (knowledge.one_hop, knowledge.two_hop) else None
    if knowledge.one_hop == "lre":
        folder = fetch_zip_folder(lre.path, lre.url, lre.archive_folder, "LRE relations", sha256=lre.sha256)
        tokenizer = load_source_tokenizer(base_model) if lre.place_on_tokens else None
        report = read_lre(folder, lre.relation_types, lre.template_index, tokenizer)
        one_hop, lre_counts, lre_unplaced = report.one_hop, report.counts, report.unplaced
        sources.append(f"LRE ({folder})")
        summary["lre"] = report.summary()
        log.info(
            "LRE: %d facts in %d relations, %d placed, %d not placed (see lre_unplaced)",
            summary["lre"]["facts"], summary["lre"]["relations"], summary["lre"]["placed"], summary["lre"]["unplaced"],
        )
    elif knowledge.one_hop == "world_facts":
        one_hop = facts.one_hop_table()
        sources.append(f"world facts v{FACTS_VERSION}")
    else:
        one_hop = empty_one_hop()
    if knowledge.two_hop == "twohopfact":
        if twohopfact.simulate_chains:
            csv_path = write_twohopfact_csv(simulate_twohopfact(twohopfact.simulate_chains), twohopfact.path)
            log.info("TwoHopFact-shaped CSV of %d synthetic chains written to %s", twohopfact.simulate_chains, csv_path)
        else:
            csv_path = fetch_file(twohopfact.path, twohopfact.url, "TwoHopFact CSV", sha256=twohopfact.sha256)
        chains = read_twohopfact(csv_path)
        two_hop, twohopfact_rejected = chains.chains, chains.rejected
        sources.append(f"TwoHopFact ({Path(csv_path).name})")
        summary["twohopfact"] = chains.summary()
        log.info("TwoHopFact: %d chains, %d rejected", summary["twohopfact"]["chains"], summary["twohopfact"]["rejected"])
    elif knowledge.two_hop == "world_facts":
        two_hop = facts.two_hop_table()
        sources.append(f"world facts v{FACTS_VERSION} (chains)")
    else:
        two_hop = empty_two_hop()
    all_one_hop = one_hop  # every placed fact: the knowledge-bits estimate sums over all of them
    one_hop, two_hop = _sample(one_hop, two_hop, evaluation_sample)
    if len(one_hop):
        corpus = [f"{p} {o}." for p, o in zip(one_hop["prompt"], one_hop["object"])]
        calibration = "one statement per evaluated one-hop fact"
    else:
        corpus = [f"{p} {o}." for p, o in zip(two_hop["prompt_two_hop"], two_hop["e3"])]
        calibration = "one statement per evaluated two-hop chain"
    prompts = prompt_summary(one_hop, two_hop)
    summary = {
        "source": " and ".join(sources) + (" (one-hop only)" if knowledge.two_hop == "none" else "")
        + (" (two-hop only)" if knowledge.one_hop == "none" else ""),
        **summary,
        "facts": one_hop.groupby("relation").size().to_dict(),
        "two_hop_chains": prompts["two_hop_chains"],
        "two_hop_chance": prompts["two_hop_chance"],
        "evaluation_prompts": prompts["evaluation_prompts"],
        "corpus_statements": len(corpus),
        "calibration_texts": calibration,
    }
    return (
        one_hop, two_hop, "\n".join(corpus) + "\n", summary, all_one_hop, lre_counts, lre_unplaced, twohopfact_rejected
    )
