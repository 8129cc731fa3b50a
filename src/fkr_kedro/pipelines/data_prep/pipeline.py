"""The evaluation prompts and calibration texts of the knowledge source in parameters
(``knowledge.source``): synthetic (default), world_facts (the smollm2 env) or
lre_twohopfact (the paper env)."""

from kedro.pipeline import Pipeline, node

from fkr_kedro.modeling.load import check_device
from fkr_kedro.run_config import active_parameters

from .nodes import KNOWLEDGE_SOURCES, generate_synthetic_world, prepare_paper_datasets, prepare_world_facts

OUTPUTS = ["one_hop_prompts", "two_hop_prompts", "train_corpus", "world_summary"]


def create_pipeline(**kwargs) -> Pipeline:
    params = active_parameters()
    # A GPU configuration stops here on a machine without one, before any download.
    check_device(params.get("base_model") or {"kind": "train"})
    source = (params.get("knowledge") or {}).get("source", "synthetic")
    if source == "synthetic":
        step = node(generate_synthetic_world, ["params:world", "params:evaluation_sample"], OUTPUTS, name="generate_synthetic_world")
    elif source == "world_facts":
        step = node(prepare_world_facts, ["params:evaluation_sample"], OUTPUTS, name="prepare_world_facts")
    elif source == "lre_twohopfact":
        step = node(
            prepare_paper_datasets,
            ["params:lre", "params:twohopfact", "params:base_model", "params:evaluation_sample"],
            OUTPUTS + ["lre_counts", "lre_unplaced", "twohopfact_rejected"],
            name="prepare_paper_datasets",
        )
    else:
        raise ValueError(f"knowledge.source {source!r} is unknown: use one of {', '.join(KNOWLEDGE_SOURCES)}")
    return Pipeline([step])
