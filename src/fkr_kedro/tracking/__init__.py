"""MLflow logging for the study: one nested run per variant under a pipeline run, metrics
from flat dicts, per-layer curves from tidy tables as metric histories (step = layer).

Knows nothing of Kedro; ``fkr_kedro.hooks`` connects it to a ``kedro run``.
"""

from .mlflow_runs import (
    VariantRuns,
    flat_numbers,
    flatten_params,
    layer_histories,
    metric_key,
)

__all__ = ["VariantRuns", "flat_numbers", "flatten_params", "layer_histories", "metric_key"]
