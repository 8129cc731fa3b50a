"""The base model: trained from scratch (``base_model.kind: train``, the embedded default)
or loaded from a local directory, the hub or a GGUF file (``dir``, ``hub``, ``gguf``)."""

from kedro.pipeline import Pipeline, node

from fkr_kedro.run_config import bind, study_parameters

from .nodes import measure_loaded_model, measure_trained_model, prepare_base_model, train_model

PROMPTS = {"one_hop_prompts": "one_hop_prompts", "two_hop_prompts": "two_hop_prompts"}


def create_pipeline(training_seed: int | None = None, **kwargs) -> Pipeline:
    """The base model; ``training_seed`` (a further seed of ``training_seeds``) trains with
    that seed instead of ``training.seed``."""
    if study_parameters().base_model.kind == "train":
        return Pipeline(
            [
                node(
                    bind(train_model, seed=training_seed) if training_seed is not None else train_model,
                    inputs={"train_corpus": "train_corpus", "model_shape": "params:model_shape", "training": "params:training",
                            "training_time": "params:training_time"},
                    outputs=["base_model@hf", "training_history", "base_model_training"],
                    name="train_model",
                ),
                node(
                    measure_trained_model,
                    inputs={
                        "base_model": "base_model@hf", **PROMPTS, "world_summary": "world_summary",
                        "training_history": "training_history", "evaluate": "params:evaluate",
                    },
                    outputs="training_metrics",
                    name="measure_trained_model",
                ),
            ]
        )
    return Pipeline(
        [
            node(prepare_base_model, inputs={"base_model": "params:base_model"}, outputs="base_model@source", name="prepare_base_model"),
            node(
                measure_loaded_model,
                inputs={"base_model": "base_model@source", **PROMPTS, "source": "params:base_model", "evaluate": "params:evaluate"},
                outputs=["training_metrics", "base_model_recall"],
                name="measure_base_model",
            ),
        ]
    )
