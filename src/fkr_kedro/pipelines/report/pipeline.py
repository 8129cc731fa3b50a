"""Figures from every pipeline's tidy tables, one figure per variant in its namespace, and
the HTML report that embeds them. Each figure node writes its figure as a PNG file
(``*_plot``, kedro-viz previews it) and hands the same image to the report (``*_png``)."""

from kedro.pipeline import Pipeline, node

from fkr_kedro.pipelines.wiring import per_namespace
from fkr_kedro.reporting.figures import FIGURES
from fkr_kedro.run_config import active_variants, bind, missing_variants

from .nodes import build_report, plot_figure, plot_variant_layers

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
    specs = active_variants()
    names = [spec.name for spec in specs]
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
                bind(build_report, missing_variants=missing_variants()),
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
                },
                outputs=["report_summary", "report_html"],
                name="build_report",
            )
        ],
        tags=["report"],
    )
    return figures + per_variant_nodes + report


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
