from kedro.pipeline import Pipeline, node

from .nodes import measure_trained_model, train_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                train_model,
                inputs=["train_corpus", "params:model_shape", "params:training"],
                outputs=["base_model@hf", "training_history"],
                name="train_model",
            ),
            node(
                measure_trained_model,
                inputs=["base_model@hf", "one_hop_prompts", "two_hop_prompts", "world_summary", "training_history"],
                outputs="training_metrics",
                name="measure_trained_model",
            ),
        ]
    )
