"""Per variant: capture activations once, then EntRec and neuron attribution from that cache;
then summary tables over all variants against the reference (``report.reference``)."""

from kedro.pipeline import Pipeline, node

from fkr_kedro.pipelines.wiring import per_namespace
from fkr_kedro.run_config import active_reference, active_variants, bind, study_parameters

from .nodes import (
    capture,
    readouts,
    summarize_attribution,
    summarize_cnst,
    summarize_drift,
    summarize_entrec,
    summarize_probes,
)

PROMPTS = {"one_hop_prompts": "one_hop_prompts", "two_hop_prompts": "two_hop_prompts"}
# The reference and the statistics' settings (alpha, bootstrap) of every summary.
REPORT = {"report": "params:report"}


class MissingReferenceError(ValueError):
    """The variants lack the reference (``report.reference``) the probe pipeline compares against."""


def create_pipeline(**kwargs) -> Pipeline:
    params = study_parameters()
    specs = active_variants(params)
    reference = active_reference(params)
    names = [spec.name for spec in specs]
    if reference not in names:
        raise MissingReferenceError(
            f"the probe pipeline compares every variant against the reference {reference!r} "
            f"(`report.reference`), but the variants are {names}: either add the variant {reference!r} "
            f"under `variants:` in your parameters (conf/base/parameters_quantize.yml or the --env's "
            f"parameters.yml; a full-precision reference is `{reference}: {{method: fp}}`), or set "
            f"`report.reference` to one of the variants (conf/base/parameters_report.yml, or "
            f"--params=report.reference=<variant>)"
        )
    # The reference first: its cache and scores lead every summary.
    names = [reference] + [n for n in names if n != reference]
    methods = {spec.name: spec.method for spec in specs}
    per_variant_nodes = sum((variant_pipeline(name, methods[name]) for name in names), Pipeline([]))
    activations = per_namespace(names, "activations")
    summary = Pipeline(
        [
            node(
                summarize_probes,
                inputs={**PROMPTS, "probe": "params:probe", **REPORT, **activations},
                outputs="probe_results",
                name="summarize_probes",
            ),
            node(summarize_drift, inputs={**REPORT, **activations}, outputs="drift_results", name="summarize_drift"),
            node(
                summarize_cnst,
                inputs={"two_hop_prompts": "two_hop_prompts", **REPORT, **activations},
                outputs="cnst_results",
                name="summarize_cnst",
            ),
            node(
                summarize_entrec,
                inputs={**REPORT, **per_namespace(names, "entrec")},
                outputs="entrec_results",
                name="summarize_entrec",
            ),
            node(
                summarize_attribution,
                inputs={"probe": "params:probe", **REPORT, **per_namespace(names, "attribution")},
                outputs="attribution_results",
                name="summarize_attribution",
            ),
        ],
        tags=["probe"],
    )
    return per_variant_nodes + summary


def variant_pipeline(name: str, method: str) -> Pipeline:
    return Pipeline(
        [
            node(
                # The model comes first: when the variant is not on disk its dataset's error
                # ("run `kedro run --pipeline=quantize` first") is the first thing raised.
                bind(capture, variant=name),
                inputs={"model": "model@variant", **PROMPTS, "probe": "params:probe"},
                outputs="activations",
                name="capture",
            ),
            node(
                readouts,
                inputs={
                    "model": "model@variant", "activations": "activations", "two_hop_prompts": "two_hop_prompts",
                    "probe": "params:probe",
                },
                outputs=["entrec", "attribution"],
                name="readouts",
            ),
        ],
        namespace=name,
        inputs={"one_hop_prompts", "two_hop_prompts"},
        parameters={"params:probe"},
        tags=["probe", method],
    )
