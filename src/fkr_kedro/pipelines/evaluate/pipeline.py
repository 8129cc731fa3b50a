"""Per variant: recall evaluation and storage footprint; then one table of all variants with
intervals and paired tests against the reference, and the same-bits pairs' comparisons."""

from kedro.pipeline import Pipeline, node

from fkr_kedro.pipelines.wiring import per_namespace
from fkr_kedro.run_config import active_variants, bind

from .nodes import estimate_knowledge_bits, evaluate_recall, measure_footprint, tabulate_variants


def create_pipeline(**kwargs) -> Pipeline:
    specs = active_variants()
    names = [spec.name for spec in specs]
    per_variant_nodes = sum((variant_pipeline(spec.name, spec.method) for spec in specs), Pipeline([]))
    summary = Pipeline(
        [
            node(
                bind(tabulate_variants, specs=specs),
                inputs={
                    "report": "params:report",
                    **per_namespace(names, "recall_metrics"), **per_namespace(names, "footprint"),
                    **per_namespace(names, "knowledge_bits"), **per_namespace(names, "one_hop_scores"),
                    **per_namespace(names, "two_hop_scores"),
                },
                outputs=["recall_by_variant", "variant_comparisons", "prompt_outcomes"],
                name="tabulate_variants",
            )
        ]
    )
    return per_variant_nodes + summary


def variant_pipeline(name: str, method: str) -> Pipeline:
    return Pipeline(
        [
            node(
                evaluate_recall,
                inputs={
                    "model": "model@variant",
                    "one_hop_prompts": "one_hop_prompts",
                    "two_hop_prompts": "two_hop_prompts",
                    "evaluate": "params:evaluate",
                },
                outputs=["one_hop_scores", "two_hop_scores", "recall_metrics"],
                name="evaluate_recall",
            ),
            node(measure_footprint, inputs={"model_dir": "model@dir"}, outputs="footprint", name="measure_footprint"),
            node(
                estimate_knowledge_bits,
                inputs={
                    "model": "model@variant", "one_hop_facts": "one_hop_facts", "footprint": "footprint",
                    "evaluate": "params:evaluate",
                },
                outputs="knowledge_bits",
                name="estimate_knowledge_bits",
            ),
        ],
        namespace=name,
        inputs={"one_hop_prompts", "two_hop_prompts", "one_hop_facts"},
        parameters={"params:evaluate"},
        tags=["evaluate", method],
    )
