"""Scale-out: a study's pipeline as a graph of Slurm jobs (one job for the shared stages, one
array task per namespace, one job for what reads every namespace), written as plain
``sbatch`` scripts and submitted with ``--dependency``. Knows nothing of Kedro: the project
CLI (``kedro submit``, ``fkr_kedro.cli``) hands it the pipeline's namespace groups.
"""

from .config import JobResources, SlurmConfig, SlurmConfigError, load_slurm_config
from .graph import JobGraph, JobGraphError, plan_jobs
from .sbatch import (
    JobScript,
    SlurmError,
    cancel_jobs,
    check_slurm,
    job_states,
    queued_jobs,
    render_script,
    submission_lock,
    submit_script,
)

__all__ = [
    "JobGraph",
    "JobGraphError",
    "JobResources",
    "JobScript",
    "SlurmConfig",
    "SlurmConfigError",
    "SlurmError",
    "cancel_jobs",
    "check_slurm",
    "job_states",
    "queued_jobs",
    "load_slurm_config",
    "plan_jobs",
    "render_script",
    "submission_lock",
    "submit_script",
]
