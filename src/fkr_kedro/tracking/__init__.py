"""MLflow logging for the study: one nested run per variant under a pipeline run, what each
catalog entry declares (``metadata: {fkr_tracking: ...}``) logged when it is saved, honest run
states, and checks of the tracking store.

Knows nothing of Kedro; ``fkr_kedro.hooks`` connects it to a ``kedro run``.
"""

from .declared import (
    TRACKING_KEY,
    Declaration,
    TrackingDeclarationError,
    check_declarations,
    log_saved,
    parse_declaration,
)
from .mlflow_runs import (
    FAILURE_TAG,
    VariantRuns,
    changed_params,
    failure_reason,
    job_scoped_tags,
    flat_numbers,
    flatten_params,
    layer_histories,
    metric_key,
    runs_table_link,
    set_experiment_kind,
    set_tags,
    study_params,
    study_run_name,
    take_job_tags,
)
from .run_state import (
    MISSING_TAG,
    PREVIOUS_STUDY_TAG,
    RunGuard,
    end_stale_runs,
    end_study,
    fail_run,
    latest_variant_runs,
    process_alive,
    process_tags,
    slurm_job_tags,
    study_runs,
)
from .store import (
    TrackingStoreError,
    check_artifact_location,
    check_env,
    check_sqlite_store,
    sqlite_path,
)

__all__ = [
    "FAILURE_TAG",
    "MISSING_TAG",
    "PREVIOUS_STUDY_TAG",
    "changed_params",
    "end_study",
    "fail_run",
    "failure_reason",
    "job_scoped_tags",
    "latest_variant_runs",
    "slurm_job_tags",
    "study_params",
    "study_runs",
    "take_job_tags",
    "TRACKING_KEY",
    "Declaration",
    "RunGuard",
    "TrackingDeclarationError",
    "TrackingStoreError",
    "VariantRuns",
    "check_artifact_location",
    "check_declarations",
    "check_env",
    "check_sqlite_store",
    "end_stale_runs",
    "flat_numbers",
    "flatten_params",
    "layer_histories",
    "log_saved",
    "metric_key",
    "parse_declaration",
    "process_alive",
    "process_tags",
    "runs_table_link",
    "set_experiment_kind",
    "set_tags",
    "sqlite_path",
    "study_run_name",
]
