"""The base model: trained from scratch (``base_model.kind: train``, the embedded default)
or loaded from a local directory, the hub or a GGUF file (``dir``, ``hub``, ``gguf``)."""

from kedro.pipeline import Pipeline, node

from fkr_kedro.modeling.load import check_device
from fkr_kedro.run_config import active_parameters

from .nodes import measure_loaded_model, measure_trained_model, prepare_base_model, train_model


def create_pipeline(**kwargs) -> Pipeline:
    source = check_device(active_parameters().get("base_model") or {"kind": "train"})
    if source.kind == "train":
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
    return Pipeline(
        [
            node(prepare_base_model, inputs="params:base_model", outputs="base_model@source", name="prepare_base_model"),
            node(
                measure_loaded_model,
                inputs=["base_model@source", "one_hop_prompts", "two_hop_prompts", "params:base_model", "params:evaluate"],
                outputs=["training_metrics", "base_model_recall"],
                name="measure_base_model",
            ),
        ]
    )
