from kedro.pipeline import Pipeline, node

from .nodes import generate_synthetic_world


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                generate_synthetic_world,
                inputs=["params:world", "params:evaluation_sample"],
                outputs=["one_hop_prompts", "two_hop_prompts", "train_corpus", "world_summary"],
                name="generate_synthetic_world",
            )
        ]
    )
