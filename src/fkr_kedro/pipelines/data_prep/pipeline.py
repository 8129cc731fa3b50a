"""The evaluation prompts and calibration texts of the knowledge sources in parameters
(``knowledge``): the synthetic world (default), the world facts (the smollm2 env), or any
one-hop source (LRE, world facts) with any two-hop source (TwoHopFact, world facts), either
side possibly none (the paper env: LRE and TwoHopFact)."""

from kedro.pipeline import Pipeline, node

from fkr_kedro.run_config import study_parameters

from .nodes import generate_synthetic_world, prepare_knowledge_sources, prepare_world_facts

# one_hop_facts: every one-hop fact of the source (not the evaluation sample), for the
# knowledge-bits estimate of the evaluate pipeline.
OUTPUTS = ["one_hop_prompts", "two_hop_prompts", "train_corpus", "world_summary", "one_hop_facts"]


def create_pipeline(**kwargs) -> Pipeline:
    knowledge = study_parameters().knowledge
    sample = {"evaluation_sample": "params:evaluation_sample"}
    if knowledge.one_hop == "synthetic":
        step = node(generate_synthetic_world, {"world": "params:world", **sample}, OUTPUTS, name="generate_synthetic_world")
    elif knowledge.one_hop == knowledge.two_hop == "world_facts":
        step = node(prepare_world_facts, sample, OUTPUTS, name="prepare_world_facts")
    else:
        step = node(
            prepare_knowledge_sources,
            {
                "knowledge": "params:knowledge", "lre": "params:lre", "twohopfact": "params:twohopfact",
                "base_model": "params:base_model", **sample,
            },
            OUTPUTS + ["lre_counts", "lre_unplaced", "twohopfact_rejected"],
            name="prepare_knowledge_sources",
        )
    return Pipeline([step])
