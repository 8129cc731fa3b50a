"""Figures from every pipeline's tidy tables, one figure per variant in its namespace, and
the HTML report that embeds them. Each figure node writes its figure as a PNG file
(``*_plot``, kedro-viz previews it) and hands the same image to the report (``*_png``)."""

from kedro.pipeline import Pipeline, node

from fkr_kedro.run_config import active_variants, bind

from .nodes import (
    FIGURES,
    build_report,
    plot_accuracy_vs_bits,
    plot_cnst_score,
    plot_drift_by_layer,
    plot_entrec_by_layer,
    plot_neuron_retention_by_layer,
    plot_probe_by_layer,
    plot_variant_layers,
)

RECALL = "recall_by_variant"
TABLES = {
    "probes": "probe_results",
    "entrec": "entrec_results",
    "attribution": "attribution_results",
    "drift": "drift_results",
    "cnst": "cnst_results",
}
PLOTTERS = {
    "accuracy_vs_bits": (plot_accuracy_vs_bits, [RECALL]),
    "probe_by_layer": (plot_probe_by_layer, [TABLES["probes"], RECALL]),
    "entrec_by_layer": (plot_entrec_by_layer, [TABLES["entrec"], RECALL]),
    "neuron_retention_by_layer": (plot_neuron_retention_by_layer, [TABLES["attribution"], RECALL]),
    "drift_by_layer": (plot_drift_by_layer, [TABLES["drift"], RECALL]),
    "cnst_score": (plot_cnst_score, [TABLES["cnst"], RECALL]),
}


def create_pipeline(**kwargs) -> Pipeline:
    specs = active_variants()
    names = [spec.name for spec in specs]
    figures = Pipeline(
        [
            node(func, inputs=[*inputs, "params:report"], outputs=[f"{name}_plot", f"{name}_png"], name=f"plot_{name}")
            for name, (func, inputs) in PLOTTERS.items()
        ],
        tags=["report"],
    )
    per_variant = sum((variant_pipeline(spec.name, spec.method) for spec in specs), Pipeline([]))
    figure_names = tuple(FIGURES)
    report = Pipeline(
        [
            node(
                bind(build_report, figure_names=figure_names, variants=tuple(names)),
                inputs=[
                    RECALL, *TABLES.values(), "two_hop_prompts",
                    "params:report", "params:base_model", "params:knowledge",
                    "scaling_exponents_if_present", "scaling_fit_metrics_if_present",
                    "scaling_conclusion_if_present", "scaling_predicted_vs_observed_if_present",
                    *[f"{name}_png" for name in figure_names],
                    *[f"{name}.layers_png" for name in names],
                ],
                outputs=["report_summary", "report_html"],
                name="build_report",
            )
        ],
        tags=["report"],
    )
    return figures + per_variant + report


def variant_pipeline(name: str, method: str) -> Pipeline:
    return Pipeline(
        [
            node(
                bind(plot_variant_layers, variant=name),
                inputs=[RECALL, *TABLES.values(), "params:report"],
                outputs=["layers_plot", "layers_png"],
                name="plot_variant_layers",
            )
        ],
        namespace=name,
        inputs={RECALL, *TABLES.values()},
        parameters={"params:report"},
        tags=["report", method],
    )
