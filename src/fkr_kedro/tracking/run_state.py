"""Honest run states: runs end KILLED when the process is stopped by a signal, FAILED when it
exits with the runs still open, and a run left RUNNING by a process that no longer exists is
marked KILLED by the next run.

Every run of a ``kedro run`` carries the tags ``fkr.pid``, ``fkr.host`` and
``fkr.process_start`` (the process's start time, so a reused pid does not pass for the old
process). Knows nothing of Kedro.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterable

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
