"""Per variant: capture activations once, then EntRec and neuron attribution from that cache;
then summary tables over all variants against the ``fp`` reference."""

from kedro.pipeline import Pipeline, node

from fkr_kedro.pipelines.wiring import per_namespace
from fkr_kedro.run_config import active_variants, bind

from .nodes import (
    REFERENCE,
    capture,
    readouts,
    summarize_attribution,
    summarize_cnst,
    summarize_drift,
    summarize_entrec,
    summarize_probes,
)

PROMPTS = {"one_hop_prompts": "one_hop_prompts", "two_hop_prompts": "two_hop_prompts"}


class MissingReferenceError(ValueError):
    """The variants lack the full-precision reference the probe pipeline compares against."""


def create_pipeline(**kwargs) -> Pipeline:
    specs = active_variants()
    names = [spec.name for spec in specs]
    if REFERENCE not in names:
        raise MissingReferenceError(
            f"the probe pipeline compares every variant against the full-precision reference "
            f"{REFERENCE!r}, but the variants are {names}: add `{REFERENCE}: {{method: fp}}` under "
            f"`variants:` in your parameters (conf/base/parameters_quantize.yml or the --env's parameters.yml)"
        )
    # The reference first: its cache and scores lead every summary.
    names = [REFERENCE] + [n for n in names if n != REFERENCE]
    methods = {spec.name: spec.method for spec in specs}
    per_variant_nodes = sum((variant_pipeline(name, methods[name]) for name in names), Pipeline([]))
    activations = per_namespace(names, "activations")
    summary = Pipeline(
        [
            node(
                summarize_probes,
                inputs={**PROMPTS, "probe": "params:probe", **activations},
                outputs="probe_results",
                name="summarize_probes",
            ),
            node(summarize_drift, inputs=activations, outputs="drift_results", name="summarize_drift"),
            node(
                summarize_cnst,
                inputs={"two_hop_prompts": "two_hop_prompts", **activations},
                outputs="cnst_results",
                name="summarize_cnst",
            ),
            node(summarize_entrec, inputs=per_namespace(names, "entrec"), outputs="entrec_results", name="summarize_entrec"),
            node(
                summarize_attribution,
                inputs={"probe": "params:probe", **per_namespace(names, "attribution")},
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
