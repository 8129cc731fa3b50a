"""Figures from every pipeline's tidy tables, one figure per variant in its namespace, and
the HTML report that embeds them. Each figure node writes its figure as a PNG file
(``*_plot``, kedro-viz previews it) and hands the same image to the report (``*_png``)."""

from kedro.pipeline import Pipeline, node

from fkr_kedro.pipelines.wiring import per_namespace
from fkr_kedro.reporting.figures import FIGURES
from fkr_kedro.run_config import (
    MISSING_NAMESPACES_ENV, active_training_seeds, active_variants, bind, missing_variants, study_parameters,
)

from .nodes import build_report, compare_training_seeds, plot_figure, plot_seed_deltas, plot_variant_layers

# The evaluate and probe pipelines' tables, under the names the nodes take them by.
TABLES = ("recall_by_variant", "probe_results", "entrec_results", "attribution_results", "drift_results", "cnst_results")
SCALING = {
    "scaling_exponents": "scaling_exponents_if_present",
    "scaling_fit_metrics": "scaling_fit_metrics_if_present",
    "scaling_conclusion": "scaling_conclusion_if_present",
    "scaling_figure": "scaling_predicted_vs_observed_if_present",
}
CAPACITY = {
    "capacity_saturation": "capacity_saturation_if_present",
    "capacity_conclusion": "capacity_conclusion_if_present",
    "capacity_figure": "capacity_curves_if_present",
    "world_summary": "world_summary_if_present",
}


def create_pipeline(**kwargs) -> Pipeline:
    params = study_parameters()
    specs = active_variants(params)
    names = [spec.name for spec in specs]
    seeds = seeds_pipeline(params)
    figures = Pipeline(
        [
            node(
                bind(plot_figure, figure=name),
                inputs={**{table: table for table in entry.tables}, "report": "params:report"},
                outputs=[f"{name}_plot", f"{name}_png"],
                name=f"plot_{name}",
            )
            for name, entry in FIGURES.items()
        ],
        tags=["report"],
    )
    per_variant_nodes = sum((variant_pipeline(spec.name, spec.method) for spec in specs), Pipeline([]))
    report = Pipeline(
        [
            node(
                bind(build_report, missing_variants=missing_variants() + missing_seeds(params),
                     training_seed=params.training.seed),
                inputs={
                    **{table: table for table in TABLES},
                    "variant_comparisons": "variant_comparisons",
                    "two_hop_prompts": "two_hop_prompts",
                    "report": "params:report",
                    "base_model": "params:base_model",
                    "knowledge": "params:knowledge",
                    **SCALING,
                    **CAPACITY,
                    **{f"{name}_png": f"{name}_png" for name in FIGURES},
                    **per_namespace(names, "layers_png"),
                    **({name: name for name in ("seed_summary", "seed_rankings", "variance_components", "seed_deltas_png")}
                       if seeds.nodes else {}),
                },
                outputs=["report_summary", "report_html"],
                name="build_report",
            )
        ],
        tags=["report"],
    )
    return figures + per_variant_nodes + seeds + report


def missing_seeds(params) -> list[str]:
    """The further training seeds' namespaces whose Slurm task did not succeed
    (``FKR_MISSING_NAMESPACES``): the report names them with the missing variants."""
    import os

    missing = set(os.environ.get(MISSING_NAMESPACES_ENV, "").split())
    return [ns for ns in active_training_seeds(params).values() if ns in missing]


def seeds_pipeline(params) -> Pipeline:
    """With several training seeds (``training_seeds``): every seed's recall table and method
    comparisons side by side, and their figure; empty with one. A seed whose Slurm task
    failed (``FKR_MISSING_NAMESPACES``) is left out: the report names it, and the summary says
    how many seeds it has."""
    missing = set(missing_seeds(params))
    further = {seed: ns for seed, ns in active_training_seeds(params).items() if ns not in missing}
    if not further:
        return Pipeline([])
    seeds = {params.training.seed: None, **further}
    tables = [f"{ns}.{name}" if ns else name for ns in seeds.values() for name in ("recall_by_variant", "variant_comparisons", "prompt_outcomes")]
    return Pipeline(
        [
            node(
                bind(compare_training_seeds, seeds=seeds),
                inputs={"report": "params:report", **{table: table for table in tables}},
                outputs=["seed_deltas", "seed_summary", "seed_rankings", "variance_components"],
                name="compare_training_seeds",
            ),
            node(plot_seed_deltas, inputs={"seed_deltas": "seed_deltas", "report": "params:report"},
                 outputs=["seed_deltas_plot", "seed_deltas_png"], name="plot_seed_deltas"),
        ],
        tags=["report"],
    )


def variant_pipeline(name: str, method: str) -> Pipeline:
    # Namespaced `report.<variant>` for grouping, the datasets keeping their `<variant>.` names:
    # the node reads the cross-variant tables, so in the variant's own namespace it would
    # interrupt it (Kedro's namespace check; `kedro submit` runs it in the report job).
    return Pipeline(
        [_variant_nodes(name, method)],
        namespace="report",
        prefix_datasets_with_namespace=False,
    )


def _variant_nodes(name: str, method: str) -> Pipeline:
    return Pipeline(
        [
            node(
                bind(plot_variant_layers, variant=name),
                inputs={**{table: table for table in TABLES}, "report": "params:report"},
                outputs=["layers_plot", "layers_png"],
                name="plot_variant_layers",
            )
        ],
        namespace=name,
        inputs=set(TABLES),
        parameters={"params:report"},
        tags=["report", method],
    )
