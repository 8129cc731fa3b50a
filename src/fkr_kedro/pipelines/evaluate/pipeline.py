"""Per variant: recall evaluation and storage footprint; then one table of all variants."""

from kedro.pipeline import Pipeline, node

from fkr_kedro.run_config import active_variants, bind

from .nodes import evaluate_recall, measure_footprint, tabulate_variants


def create_pipeline(**kwargs) -> Pipeline:
    specs = active_variants()
    per_variant = sum((variant_pipeline(spec.name, spec.method) for spec in specs), Pipeline([]))
    tabulate = bind(tabulate_variants, specs)
    summary = Pipeline(
        [
            node(
                tabulate,
                inputs=[name for spec in specs for name in (f"{spec.name}.recall_metrics", f"{spec.name}.footprint")],
                outputs="recall_by_variant",
                name="tabulate_variants",
            )
        ]
    )
    return per_variant + summary


def variant_pipeline(name: str, method: str) -> Pipeline:
    return Pipeline(
        [
            node(
                evaluate_recall,
                inputs=["model@variant", "one_hop_prompts", "two_hop_prompts", "params:evaluate"],
                outputs=["one_hop_scores", "two_hop_scores", "recall_metrics"],
                name="evaluate_recall",
            ),
            node(measure_footprint, inputs="model@dir", outputs="footprint", name="measure_footprint"),
        ],
        namespace=name,
        inputs={"one_hop_prompts", "two_hop_prompts"},
        parameters={"params:evaluate"},
        tags=["evaluate", method],
    )
