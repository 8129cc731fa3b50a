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
    VariantRuns,
    flat_numbers,
    flatten_params,
    layer_histories,
    metric_key,
    runs_table_link,
    set_experiment_kind,
    set_tags,
    study_run_name,
)
from .run_state import RunGuard, end_stale_runs, process_alive, process_tags
from .store import (
    TrackingStoreError,
    check_artifact_location,
    check_env,
    check_schema,
    check_sqlite_store,
    prepare_sqlite_store,
    relocate_moved_project,
    sqlite_path,
)

__all__ = [
    "TRACKING_KEY",
    "Declaration",
    "RunGuard",
    "TrackingDeclarationError",
    "TrackingStoreError",
    "VariantRuns",
    "check_artifact_location",
    "check_declarations",
    "check_env",
    "check_schema",
    "check_sqlite_store",
    "end_stale_runs",
    "flat_numbers",
    "flatten_params",
    "layer_histories",
    "log_saved",
    "metric_key",
    "parse_declaration",
    "prepare_sqlite_store",
    "process_alive",
    "process_tags",
    "relocate_moved_project",
    "runs_table_link",
    "set_experiment_kind",
    "set_tags",
    "sqlite_path",
    "study_run_name",
]
