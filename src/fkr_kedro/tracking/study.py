"""What the study's runs say about themselves: each variant's params and tags, the nested run
of each variant under a study's parent run, and the descriptions that point at the report.

Knows nothing of Kedro; ``fkr_kedro.hooks.mlflow`` hands it the variant specs and the runs.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from .mlflow_runs import VariantRuns

# The variant settings a user filters nested runs by (`tags.method = 'gptq' and tags.bits = '4'`).
TAGGED = ("method", "bits", "group_size")


def variant_params(spec, options: Collection[str]) -> dict[str, Any]:
    """Method, bits, group size, calibration size and draw of the variant ``spec``, the same
    keys for every variant so that MLflow's Compare lines them up; a setting its method does not
    read (not in ``options``) is ``None`` (RTN and bitsandbytes take no calibration texts).
    ``calibration_seed`` and ``variant_group`` tell a variant's calibration draws apart
    (``quantize.calibration_seeds``)."""
    return {
        "method": spec.method,
        "bits": spec.bits,
        "group_size": spec.group_size,
        "calibration_size": spec.calibration_size if "calibration_size" in options else None,
        "calibration_seed": spec.calibration_seed,
        "variant_group": spec.variant_group,
        "sym": spec.sym if "sym" in options else None,
        "desc_act": spec.desc_act if "desc_act" in options else None,
    }


def variant_tags(params: dict[str, Any], source: dict[str, str]) -> dict[str, Any]:
    """The nested run's tags: its method, bits and group size (those set), model and source."""
    return {
        **{k: v for k, v in params.items() if k in TAGGED and v is not None},
        "model": source["model"],
        "knowledge_source": source["dataset"],
    }


def latest_nested_runs(client, experiment_id: str, parent_run_id: str) -> dict[str, str]:
    """``{variant: run id}`` of the latest nested run of each variant under the parent run."""
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        order_by=["attributes.start_time DESC"], max_results=10_000,
    )
    latest: dict[str, str] = {}
    for run in runs:
        variant = run.data.tags.get("variant")
        if variant and variant not in latest:
            latest[variant] = run.info.run_id
    return latest


def describe_report(runs: VariantRuns, artifact: str) -> None:
    """Point every run's description at the report artifact ``artifact`` of the parent run."""
    link = f"#/experiments/{runs.experiment_id}/runs/{runs.parent_run_id}/artifactPath/{artifact}"
    runs.set_note(f"Report of this study: [{artifact}]({link}) (an artifact of this run).")
    for variant in runs.run_ids:
        runs.set_note(
            f"Variant `{variant}` of the study in the parent run; its report: [{artifact}]({link}) "
            "(an artifact of the parent run). This run holds the variant's metrics, its per-layer curves "
            "(metric histories, step = layer) and its own figure.",
            variant=variant,
        )
