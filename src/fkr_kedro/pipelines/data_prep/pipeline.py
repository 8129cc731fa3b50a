"""The evaluation prompts and calibration texts of the knowledge source in parameters
(``knowledge.source``): synthetic (default), world_facts (the smollm2 env) or
lre_twohopfact (the paper env)."""

from kedro.pipeline import Pipeline, node

from fkr_kedro.run_config import study_parameters

from .nodes import generate_synthetic_world, prepare_paper_datasets, prepare_world_facts

OUTPUTS = ["one_hop_prompts", "two_hop_prompts", "train_corpus", "world_summary"]


def create_pipeline(**kwargs) -> Pipeline:
    source = study_parameters().knowledge.source  # one of parameters.KnowledgeSource
    sample = {"evaluation_sample": "params:evaluation_sample"}
    if source == "synthetic":
        step = node(generate_synthetic_world, {"world": "params:world", **sample}, OUTPUTS, name="generate_synthetic_world")
    elif source == "world_facts":
        step = node(prepare_world_facts, sample, OUTPUTS, name="prepare_world_facts")
    else:
        step = node(
            prepare_paper_datasets,
            {"lre": "params:lre", "twohopfact": "params:twohopfact", "base_model": "params:base_model", **sample},
            OUTPUTS + ["lre_counts", "lre_unplaced", "twohopfact_rejected"],
            name="prepare_paper_datasets",
        )
    return Pipeline([step])
