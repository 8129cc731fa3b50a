"""Honest run states: runs end KILLED when the process is stopped by a signal, FAILED when it
exits with the runs still open, and a run left RUNNING by a process that no longer exists is
marked KILLED by the next run.

Every run of a ``kedro run`` carries the tags ``fkr.pid``, ``fkr.host`` and
``fkr.process_start`` (the process's start time, so a reused pid does not pass for the old
process). A study submitted to Slurm (``kedro submit``) is ended by its last job,
:func:`end_study`: FINISHED only when every variant's nested run finished. Knows nothing of Kedro.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

PID_TAG = "fkr.pid"
HOST_TAG = "fkr.host"
START_TAG = "fkr.process_start"
ENDED_BY_TAG = "fkr.ended_by"
KILLED = RunStatus.to_string(RunStatus.KILLED)
FAILED = RunStatus.to_string(RunStatus.FAILED)
RUNNING = RunStatus.to_string(RunStatus.RUNNING)


def process_start_time(pid: int) -> str | None:
    """The process's start time as text (clock ticks since boot on Linux), None if unknown."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # Field 22 (starttime), counted after the command name, which may hold spaces.
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_tags(pid: int | None = None) -> dict[str, str]:
    """The tags that name this process: pid, host and start time."""
    pid = os.getpid() if pid is None else pid
    tags = {PID_TAG: str(pid), HOST_TAG: socket.gethostname()}
    start = process_start_time(pid)
    if start is not None:
        tags[START_TAG] = start
    return tags


def process_alive(pid: int, start: str | None = None) -> bool:
    """Whether the process ``pid`` exists on this host (and, when ``start`` is known, is the
    same process that started then, not a later one that reused the pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    if start is not None:
        now = process_start_time(pid)
        if now is not None and now != start:
            return False
    return True


def end_stale_runs(
    client: MlflowClient,
    experiment_ids: Iterable[str],
    host: str | None = None,
    is_alive: Callable[[int, str | None], bool] = process_alive,
) -> list[str]:
    """Mark KILLED every RUNNING run of this host whose process no longer exists (a run whose
    process was killed with SIGKILL, or lost with its machine); return their ids. Runs of other
    hosts, or without the process tags, are left as they are: whether they live cannot be told."""
    host = socket.gethostname() if host is None else host
    ended: list[str] = []
    filter_string = f"attributes.status = '{RUNNING}' and tags.`{HOST_TAG}` = '{host}'"
    for run in client.search_runs(list(experiment_ids), filter_string=filter_string, max_results=10_000):
        tags = run.data.tags
        try:
            pid = int(tags[PID_TAG])
        except (KeyError, ValueError):
            continue
        if is_alive(pid, tags.get(START_TAG)):
            continue
        client.set_tag(run.info.run_id, ENDED_BY_TAG, f"a later run: process {pid} on {host} no longer exists")
        client.set_terminated(run.info.run_id, KILLED)
        log.warning(
            "MLflow: run %s (%s) was still RUNNING but its process %d on %s no longer exists; marked KILLED",
            run.info.run_id, run.info.run_name, pid, host,
        )
        ended.append(run.info.run_id)
    return ended


class RunGuard:
    """While installed, a SIGTERM, SIGINT or SIGHUP ends the open runs KILLED (through ``end``)
    before the signal takes its usual course (SIGINT: KeyboardInterrupt; the others end the process),
    and an exit with the runs still open ends them FAILED. ``end(status, reason)`` must end
    every open run and be safe to call twice."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # SIGHUP: the terminal closed

    def __init__(self, end: Callable[[str, str], None]):
        self._end = end
        self._previous: dict[int, object] = {}
        self._installed = False
        self._lock = threading.Lock()

    def install(self) -> None:
        if self._installed:
            return
        if threading.current_thread() is threading.main_thread():  # signal handlers live there only
            for signum in self.SIGNALS:
                previous = signal.getsignal(signum)
                if previous is signal.SIG_IGN:
                    continue  # ignored signals (a background job's SIGINT) stay ignored
                self._previous[signum] = previous
                signal.signal(signum, self._on_signal)
        atexit.register(self._at_exit)
        self._installed = True

    def uninstall(self) -> None:
        if not self._installed:
            return
        for signum, previous in self._previous.items():
            if signal.getsignal(signum) == self._on_signal:
                signal.signal(signum, previous)
        self._previous = {}
        atexit.unregister(self._at_exit)
        self._installed = False

    def _on_signal(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        previous = self._previous.get(signum, signal.SIG_DFL)
        self._finish(KILLED, f"{name} (process {os.getpid()})")
        if callable(previous):
            previous(signum, frame)  # SIGINT: Python's default_int_handler raises KeyboardInterrupt
        else:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)  # end as the signal would have without us

    def _at_exit(self) -> None:
        self._finish(FAILED, f"process {os.getpid()} exited while the run was open")

    def _finish(self, status: str, reason: str) -> None:
        with self._lock:
            if not self._installed:
                return
            self.uninstall()
        try:
            self._end(status, reason)
        except Exception as error:  # the process is going down anyway: say so, do not mask the signal
            log.error("MLflow: could not end the runs %s after %s: %s", status, reason, error)


# ------------------------------------------------------------------ a submitted study's runs
# The study run a resubmission with changed study parameters replaces (its new run links it).
PREVIOUS_STUDY_TAG = "fkr.previous_study_run"
MISSING_TAG = "fkr.missing_variants"
SLURM_JOB_TAG = "slurm.job_id"
SLURM_STATE_TAG = "fkr.slurm_state"
NOTE_TAG = "mlflow.note.content"


def slurm_job_tags(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The Slurm job (``123`` or array task ``123_4``) this process runs in; empty outside Slurm."""
    environ = os.environ if environ is None else environ
    array, task = environ.get("SLURM_ARRAY_JOB_ID"), environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array}_{task}" if array and task else environ.get("SLURM_JOB_ID")
    return {SLURM_JOB_TAG: job} if job else {}


def fail_run(client: MlflowClient, run_id: str, reason: str) -> None:
    """End ``run_id`` FAILED with ``reason`` (a submission refused by Slurm)."""
    client.set_tag(run_id, ENDED_BY_TAG, reason[:5000])
    client.set_terminated(run_id, FAILED)


def study_runs(client: MlflowClient, parent_run_id: str) -> list[str]:
    """The study run and the runs it replaced (``fkr.previous_study_run``), newest first."""
    chain = [parent_run_id]
    while len(chain) < 100:
        previous = client.get_run(chain[-1]).data.tags.get(PREVIOUS_STUDY_TAG)
        if not previous or previous in chain:
            break
        chain.append(previous)
    return chain


def latest_variant_runs(client: MlflowClient, experiment_id: str, parent_run_ids: list[str]) -> dict[str, Any]:
    """``{variant: its latest nested run}``, looked for under the first parent, then the next
    (a variant kept from a replaced study run)."""
    latest: dict[str, Any] = {}
    for parent in parent_run_ids:
        runs = client.search_runs(
            [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'",
            order_by=["attributes.start_time DESC"], max_results=10_000,
        )
        for run in runs:
            variant = run.data.tags.get("variant")
            if variant and variant not in latest:
                latest[variant] = run
    return latest


def end_study(
    client: MlflowClient,
    parent_run_id: str,
    variants: Iterable[str],
    submitted: Mapping[str, str],
    states: Mapping[str, tuple[str, str]],
    since_ms: int,
    other_jobs: Mapping[str, str] | None = None,
) -> tuple[str, list[str]]:
    """End a submitted study's run once its jobs have ended; its status and missing variants.

    ``variants``: every variant of the study; ``submitted``: ``{variant: Slurm job id}`` of this
    submission's jobs (an array task as ``123_4``); ``states``: ``{job id: (state, reason)}``
    from Slurm; ``since_ms``: when the submission was made. A submitted variant without a
    nested run since then (its task was cancelled or failed before Python started) gets one,
    FAILED with the Slurm state; one left RUNNING (its process was killed outright) ends FAILED
    with it. The study run ends FINISHED when every variant's latest nested run finished, else
    FAILED naming the missing variants (tag ``fkr.missing_variants`` and its description).
    ``other_jobs``: ``{kind: job id}`` of the submission's other jobs (shared stages, report):
    one that did not complete fails the study run too."""
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    chain = study_runs(client, parent_run_id)
    own = latest_variant_runs(client, experiment_id, chain[:1])
    for variant, job in submitted.items():
        run = own.get(variant)
        state, why = states.get(job, ("UNKNOWN", "Slurm no longer knows the job"))
        slurm = f"Slurm job {job} ended {state}" + (f" ({why})" if why else "")
        if run is None or run.info.start_time < since_ms:
            created = client.create_run(
                experiment_id, run_name=variant,
                tags={"mlflow.parentRunId": parent_run_id, "mlflow.runName": variant, "variant": variant,
                      SLURM_JOB_TAG: job, SLURM_STATE_TAG: state,
                      "fkr.failure": f"{slurm} before its run started"},
            )
            client.set_terminated(created.info.run_id, FAILED)
        elif run.info.status == RUNNING:
            client.set_tag(run.info.run_id, SLURM_STATE_TAG, state)
            client.set_tag(run.info.run_id, "fkr.failure", f"{slurm} while the run was open")
            client.set_terminated(run.info.run_id, FAILED)
    latest = latest_variant_runs(client, experiment_id, chain)
    missing = [v for v in variants if v not in latest or latest[v].info.status != "FINISHED"]
    failed_jobs = [
        f"the {kind} job {job} ended {states.get(job, ('UNKNOWN', ''))[0]}"
        for kind, job in (other_jobs or {}).items()
        if states.get(job, ("UNKNOWN", ""))[0] != "COMPLETED"
    ]
    if missing or failed_jobs:
        problems = ([f"variants without a finished run: {', '.join(missing)}"] if missing else []) + failed_jobs
        client.set_tag(parent_run_id, MISSING_TAG, " ".join(missing))
        note = client.get_run(parent_run_id).data.tags.get(NOTE_TAG, "")
        if note.startswith("Missing variants"):
            note = note.split("\n\n", 1)[1] if "\n\n" in note else ""
        line = f"Missing variants (no finished run): {', '.join(missing) or 'none'}; " + "; ".join(problems) + "."
        client.set_tag(parent_run_id, NOTE_TAG, f"{line}\n\n{note}".strip())
        client.set_tag(parent_run_id, ENDED_BY_TAG, "; ".join(problems))
        status = FAILED
    else:
        tags = client.get_run(parent_run_id).data.tags
        if MISSING_TAG in tags:
            client.delete_tag(parent_run_id, MISSING_TAG)
        note = tags.get(NOTE_TAG, "")
        if note.startswith("Missing variants"):
            client.set_tag(parent_run_id, NOTE_TAG, note.split("\n\n", 1)[1] if "\n\n" in note else "")
        if ENDED_BY_TAG in tags:
            client.delete_tag(parent_run_id, ENDED_BY_TAG)
        status = RunStatus.to_string(RunStatus.FINISHED)
    client.set_terminated(parent_run_id, status)
    return status, missing
