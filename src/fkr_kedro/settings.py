"""Project settings (https://docs.kedro.org/en/stable/configure/configuration_basics/)."""

from omegaconf.resolvers import oc

from fkr_kedro.hooks import (
    ActiveConfigHook,
    MissingInputHook,
    MlflowRunStackHook,
    MlflowVariantHook,
    RunSummaryHook,
    StaleOutputsHook,
    ThreadsHook,
)
from fkr_kedro.run_config import StudyConfigLoader

# kedro-mlflow's own hook (registered as a plugin) opens the parent run and logs parameters;
# MlflowVariantHook adds a nested run per variant, metrics, per-layer curves and artifacts;
# MissingInputHook names the pipelines to run when an input does not exist yet;
# StaleOutputsHook warns when a partial run leaves outputs older than their inputs;
# MlflowRunStackHook leaves no MLflow run active after a run (notebooks, tests);
# RunSummaryHook keeps the log short and ends it with the findings, the report and MLflow.
HOOKS = (
    ActiveConfigHook(), MissingInputHook(), MlflowVariantHook(), StaleOutputsHook(), MlflowRunStackHook(), ThreadsHook(),
    RunSummaryHook(),
)

# Kedro's OmegaConfigLoader plus ${study_root:} (the catalog's output folder: `data` for the
# default environment, `data/<env>` for any other), so studies never overwrite each other, and
# ${project_root:} (the project's absolute folder: the default MLflow store's path).
CONFIG_LOADER_CLASS = StudyConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # conf/base/mlflow.yml reads MLFLOW_TRACKING_URI (default: the project's SQLite store).
    "custom_resolvers": {"oc.env": oc.env},
    # conf/local/mlflow.yml may set one key (e.g. server.mlflow_tracking_uri) and keep the rest.
    "merge_strategy": {"mlflow": "soft"},
}
