"""Project hooks (registered in settings.py), one module per concern:

* :mod:`.runtime`: the active configuration and the checks before a run, torch's threads,
  MLflow's run stack;
* :mod:`.advice`: what to run first when an input is missing, what a partial run left stale;
* :mod:`.mlflow`: one nested run per variant and what the catalog declares to be tracked;
* :mod:`.runlog`: a run that speaks briefly (repeated warnings once, one line a node) and
  ends with what it found, where the report is and how to open MLflow.

The Kedro-configuration helpers they share with ``kedro submit`` are in
:mod:`fkr_kedro.kedro_config`; the library code in :mod:`fkr_kedro.tracking`.
"""

# runlog first: it quiets library loggers before the other hooks import torch.
from .runlog import RunSummaryHook  # isort: skip
from ..kedro_config import project_pipelines, submitted_job
from .advice import RUN_ORDER, MissingInputHook, StaleOutputsHook, missing_chain, run_chain_advice, stale_nodes
from .mlflow import MlflowVariantHook
from .runtime import ActiveConfigHook, MlflowRunStackHook, ThreadsHook

__all__ = [
    "RUN_ORDER",
    "ActiveConfigHook",
    "MissingInputHook",
    "MlflowRunStackHook",
    "MlflowVariantHook",
    "RunSummaryHook",
    "StaleOutputsHook",
    "ThreadsHook",
    "missing_chain",
    "project_pipelines",
    "run_chain_advice",
    "stale_nodes",
    "submitted_job",
]
