"""Project hooks (registered in settings.py)."""

from .mlflow import *  # noqa: F401,F403
from .mlflow import RUN_ORDER, _run_order, missing_chain, project_pipelines, run_chain_advice, stale_nodes  # noqa: F401
