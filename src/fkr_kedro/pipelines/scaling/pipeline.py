"""The scaling pipeline: its own world (``scaling.world``) and the in-context task, then per
model size and training seed one namespace (`scaling_<size>`, or `scaling_<size>_seed<k>`
for seeds other than `training.seed`: train, sweep), then the fit over all sizes.

`kedro run --pipeline=scaling` runs it all; the sweep of one size can run in its own process
with `kedro run --pipeline=scaling --namespaces=scaling_<size>` once the world and the
in-context task exist, and a final `kedro run --pipeline=scaling` reads every cached point.
"""

from kedro.pipeline import Pipeline, node

from fkr_kedro.pipelines.wiring import per_namespace
from fkr_kedro.run_config import bind, study_parameters

from .nodes import (
    build_in_context_task, fit_scaling_laws, generate_scaling_world, plot_scaling_fit, summarize_training, sweep_model,
    train_scaling_model,
)

SHARED = {
    "scaling_train_corpus", "scaling_one_hop_prompts", "scaling_two_hop_prompts", "scaling_in_context_corpus",
    "scaling_in_context_prompts",
}


def create_pipeline(**kwargs) -> Pipeline:
    params = study_parameters()
    if params.scaling is None or params.knowledge.one_hop != "synthetic":
        return Pipeline([])  # the sweep trains models on the synthetic world only
    settings = params.scaling.validate_all()
    task = Pipeline(
        [
            node(
                generate_scaling_world,
                inputs={"scaling": "params:scaling", "evaluation_sample": "params:evaluation_sample"},
                outputs=["scaling_one_hop_prompts", "scaling_two_hop_prompts", "scaling_train_corpus", "scaling_world_summary"],
                name="generate_scaling_world",
            ),
            node(
                build_in_context_task,
                inputs={"scaling": "params:scaling"},
                outputs=["scaling_in_context_corpus", "scaling_in_context_prompts"],
                name="build_in_context_task",
            ),
        ],
        tags=["scaling"],
    )
    models = settings.models()
    sizes = sum((model_pipeline(ns, size, seed) for ns, (size, seed) in models.items()), Pipeline([]))
    fit = Pipeline(
        [
            node(
                fit_scaling_laws,
                inputs={"scaling": "params:scaling", **per_namespace(models, "scaling_points")},
                outputs=["scaling_points", "scaling_exponents", "scaling_fit_metrics", "scaling_conclusion"],
                name="fit_scaling_laws",
            ),
            node(plot_scaling_fit, inputs={"scaling_points": "scaling_points"}, outputs="scaling_predicted_vs_observed", name="plot_scaling_fit"),
            node(
                summarize_training,
                inputs={"scaling": "params:scaling", **per_namespace(models, "scaling_model")},
                outputs=["scaling_training", "scaling_training_curves"],
                name="summarize_scaling_training",
            ),
        ],
        tags=["scaling"],
    )
    return task + sizes + fit


def model_pipeline(namespace: str, size: str, seed: int) -> Pipeline:
    """Train one size with one seed, then sweep it, in its own namespace."""
    return Pipeline(
        [
            node(
                bind(train_scaling_model, size=size, seed=seed),
                inputs={
                    "train_corpus": "scaling_train_corpus", "in_context_corpus": "scaling_in_context_corpus",
                    "stored_dir": "scaling_model_store", "scaling": "params:scaling",
                },
                outputs="scaling_model",
                name="train_scaling_model",
            ),
            node(
                bind(sweep_model, size=size, seed=seed),
                inputs={
                    "model": "scaling_model",
                    "cache": "scaling_point_cache",
                    "train_corpus": "scaling_train_corpus",
                    "in_context_corpus": "scaling_in_context_corpus",
                    "one_hop_prompts": "scaling_one_hop_prompts",
                    "two_hop_prompts": "scaling_two_hop_prompts",
                    "in_context_prompts": "scaling_in_context_prompts",
                    "scaling": "params:scaling",
                },
                outputs="scaling_points",
                name="sweep_points",
            ),
        ],
        namespace=namespace,
        inputs=SHARED,
        parameters={"params:scaling"},
        tags=["scaling", namespace],
    )
