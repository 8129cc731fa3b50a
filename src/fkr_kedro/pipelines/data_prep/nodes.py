"""Nodes of the data_prep pipeline: the evaluation prompts and calibration texts from the
chosen knowledge source (``knowledge.source``): the synthetic world, the project's world
facts, or the papers' datasets (LRE and TwoHopFact)."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from fkr_kedro.knowledge.download import fetch_file, fetch_zip_folder
from fkr_kedro.knowledge.lre import read_lre
from fkr_kedro.knowledge.schema import prompt_summary, sample_per_group
from fkr_kedro.knowledge.twohopfact import read_twohopfact
from fkr_kedro.knowledge.world import WorldConfig, generate_world
from fkr_kedro.knowledge.world_facts import FACTS_VERSION, load_world_facts
from fkr_kedro.modeling.load import ModelSource, load_tokenizer
from fkr_kedro.parameters import EvaluationSample, LreSettings, TwoHopFactSettings

log = logging.getLogger(__name__)


def _sample(one_hop: pd.DataFrame, two_hop: pd.DataFrame, sample: EvaluationSample) -> tuple[pd.DataFrame, pd.DataFrame]:
    return (
        sample_per_group(one_hop, ["relation"], sample.max_per_relation, sample.seed),
        sample_per_group(two_hop, ["composition", "split"], sample.max_per_composition, sample.seed),
    )


def generate_synthetic_world(
    world: WorldConfig, evaluation_sample: EvaluationSample
) -> tuple[pd.DataFrame, pd.DataFrame, str, dict]:
    """Evaluation prompts (one-hop facts and two-hop chains, a seeded sample of at most
    ``evaluation_sample`` rows per relation, and per composition and split), the training
    corpus (every fact, one statement a line) and a summary with the knowledge load in bits."""
    generated = generate_world(world)
    corpus = generated.corpus()
    one_hop, two_hop = _sample(generated.one_hop_table(), generated.two_hop_table(), evaluation_sample)
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
    return one_hop, two_hop, "\n".join(corpus) + "\n", summary


def prepare_world_facts(evaluation_sample: EvaluationSample) -> tuple[pd.DataFrame, pd.DataFrame, str, dict]:
    """The project's hand-written world facts: every fact and chain is evaluated (a few
    hundred); the calibration corpus is one statement per fact."""
    facts = load_world_facts()
    one_hop, two_hop = _sample(facts.one_hop_table(), facts.two_hop_table(), evaluation_sample)
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
    return one_hop, two_hop, "\n".join(corpus) + "\n", summary


def prepare_paper_datasets(
    lre: LreSettings, twohopfact: TwoHopFactSettings, base_model: ModelSource, evaluation_sample: EvaluationSample
) -> tuple[pd.DataFrame, pd.DataFrame, str, dict, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """LRE (one-hop) and TwoHopFact (two-hop) from local copies, downloaded into data/01_raw
    when missing and the network allows. Subjects are placed on the base model's tokens;
    what cannot be placed or mapped is returned in report tables, never dropped silently."""
    folder = fetch_zip_folder(lre.path, lre.url, lre.archive_folder, "LRE relations")
    tokenizer = load_tokenizer(base_model) if lre.place_on_tokens else None
    report = read_lre(folder, lre.relation_types, lre.template_index, tokenizer)
    csv_path = fetch_file(twohopfact.path, twohopfact.url, "TwoHopFact CSV")
    chains = read_twohopfact(csv_path)
    one_hop, two_hop = _sample(report.one_hop, chains.chains, evaluation_sample)
    corpus = [f"{p} {o}." for p, o in zip(one_hop["prompt"], one_hop["object"])]
    prompts = prompt_summary(one_hop, two_hop)
    summary = {
        "source": f"LRE ({folder}) and TwoHopFact ({Path(csv_path).name})",
        "lre": report.summary(),
        "twohopfact": chains.summary(),
        "facts": one_hop.groupby("relation").size().to_dict(),
        "two_hop_chains": prompts["two_hop_chains"],
        "two_hop_chance": prompts["two_hop_chance"],
        "evaluation_prompts": prompts["evaluation_prompts"],
        "corpus_statements": len(corpus),
        "calibration_texts": "one statement per evaluated LRE fact",
    }
    log.info(
        "LRE: %d facts in %d relations, %d placed, %d not placed (see lre_unplaced); TwoHopFact: %d chains, %d rejected",
        summary["lre"]["facts"], summary["lre"]["relations"], summary["lre"]["placed"], summary["lre"]["unplaced"],
        summary["twohopfact"]["chains"], summary["twohopfact"]["rejected"],
    )
    return one_hop, two_hop, "\n".join(corpus) + "\n", summary, report.counts, report.unplaced, chains.rejected
