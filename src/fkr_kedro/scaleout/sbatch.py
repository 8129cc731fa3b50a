"""Plain ``sbatch`` scripts for the jobs of a :class:`~fkr_kedro.scaleout.graph.JobGraph`,
the checks before submitting (``sbatch`` on PATH, the partitions exist) and submission with
``--dependency``."""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .config import JobResources


class SlurmError(RuntimeError):
    """Slurm is not reachable or refused a job; the message says what to do."""


@dataclass(frozen=True)
class JobScript:
    kind: str  # shared, variant, report
    text: str
    array: tuple[str, ...] = ()  # the namespaces of an array job, in task order


def _quote(args: Iterable[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


def render_script(
    kind: str,
    job_name: str,
    resources: JobResources,
    project: Path,
    log_dir: Path,
    setup: Sequence[str],
    exports: Mapping[str, str],
    kedro_args: Sequence[str],
    array: Sequence[str] = (),
    done_dir: Path | None = None,
    missing_check: Sequence[str] = (),
    comment: str = "",
    program: Sequence[str] | None = None,
) -> JobScript:
    """One job's script. An array job runs ``kedro run <kedro_args> --namespaces=<its
    namespace>``; ``done_dir`` gets one ``<namespace>.done`` file per array task that
    succeeded; ``missing_check`` (report job) lists the namespaces whose ``.done`` file is
    looked for, the absent ones exported as ``FKR_MISSING_NAMESPACES`` for the report;
    ``program`` replaces ``kedro run <kedro_args>`` (the job that ends the study's runs)."""
    output = log_dir / (f"{kind}-%A_%a.out" if array else f"{kind}-%j.out")
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --output={output}",
        f"#SBATCH --chdir={project}",
        "#SBATCH --kill-on-invalid-dep=yes",
    ]
    if array:
        lines.append(f"#SBATCH --array=0-{len(array) - 1}")
    lines += resources.sbatch_lines()
    lines += ["", f"# {comment}" if comment else "# written by `kedro submit`", "set -euo pipefail"]
    lines += list(setup)
    lines += [f"export {key}={shlex.quote(value)}" for key, value in exports.items()]
    command = _quote(program) if program is not None else f"kedro run {_quote(kedro_args)}"
    if array:
        lines += [
            f"NAMESPACES=({_quote(array)})",
            'NAMESPACE="${NAMESPACES[$SLURM_ARRAY_TASK_ID]}"',
            'echo "array task $SLURM_ARRAY_TASK_ID: namespace $NAMESPACE"',
            f'{command} --namespaces="$NAMESPACE"',
        ]
        if done_dir is not None:
            lines.append(f'touch {shlex.quote(str(done_dir))}/"$NAMESPACE".done')
    elif missing_check:
        lines += [
            "# Array tasks that did not succeed: the report names them (FKR_MISSING_NAMESPACES).",
            "MISSING=()",
            f"for NAMESPACE in {_quote(missing_check)}; do",
            f'  [ -e {shlex.quote(str(done_dir))}/"$NAMESPACE".done ] || MISSING+=("$NAMESPACE")',
            "done",
            'export FKR_MISSING_NAMESPACES="${MISSING[*]}"',
            'echo "missing namespaces: ${FKR_MISSING_NAMESPACES:-none}"',
            f"exec {command}",
        ]
    else:
        lines.append(f"exec {command}")
    return JobScript(kind, "\n".join(lines) + "\n", tuple(array))


def check_slurm(partitions: Iterable[str | None], env: Mapping[str, str] | None = None) -> None:
    """``sbatch`` on PATH and every named partition known to the cluster, or one error."""
    missing = [name for name in ("sbatch", "sinfo") if shutil.which(name) is None]
    if missing:
        raise SlurmError(
            f"{', '.join(missing)} not found on PATH: run `kedro submit` on a Slurm login node "
            "(or install Slurm's client commands), or use `--dry-run` to only print the jobs"
        )
    wanted = sorted({p for p in partitions if p})
    if not wanted:
        return
    result = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, env=env, timeout=60, check=False)
    if result.returncode != 0:
        raise SlurmError(f"sinfo failed ({result.returncode}): {result.stderr.strip()}")
    known = {line.strip().rstrip("*") for line in result.stdout.split()}
    unknown = [p for p in wanted if p not in known]
    if unknown:
        raise SlurmError(
            f"unknown partition(s) {', '.join(unknown)} in slurm.yml: this cluster has {', '.join(sorted(known)) or 'none'}"
        )


def submit_script(path: Path, dependency: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """Submit ``path`` with ``sbatch --parsable``; the job id."""
    command = ["sbatch", "--parsable"]
    if dependency:
        command.append(f"--dependency={dependency}")
    command.append(str(path))
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    if result.returncode != 0:
        raise SlurmError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout.strip().split(";")[0]


def _slurm(command: Sequence[str], env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(command), capture_output=True, text=True, env=env, timeout=60, check=False)


def queued_jobs(ids: Iterable[str], env: Mapping[str, str] | None = None) -> list[str]:
    """The jobs among ``ids`` that are still pending or running (array tasks as ``123_4``)."""
    ids = [str(i) for i in ids if i]
    if not ids:
        return []
    if shutil.which("squeue") is None:
        raise SlurmError(f"squeue not found on PATH, so whether jobs {', '.join(ids)} still run cannot be told: "
                         "run `kedro submit` on a Slurm login node")
    found: list[str] = []
    for job in ids:  # one at a time: squeue refuses the whole list when one id is gone
        result = _slurm(["squeue", "-h", "-r", "-j", job, "-o", "%i %T"], env)
        if result.returncode != 0:
            if "Invalid job id" in result.stderr:
                continue  # gone from the controller: ended long ago
            raise SlurmError(f"squeue -j {job} failed ({result.returncode}): {result.stderr.strip()}")
        for line in result.stdout.split("\n"):
            parts = line.split()
            if len(parts) == 2 and parts[1] in _ACTIVE:
                found.append(parts[0])
    return found


# squeue's states of a job that has not ended.
_ACTIVE = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "SIGNALING",
           "STAGE_OUT", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "STOPPED"}


def job_states(ids: Iterable[str], env: Mapping[str, str] | None = None) -> dict[str, tuple[str, str]]:
    """``{job or array task id: (state, reason)}`` of ``ids`` and their array tasks, from
    ``sacct`` (the accounting database), else from ``squeue --states=all`` (the controller,
    which keeps ended jobs for MinJobAge seconds); ids Slurm no longer knows are left out."""
    ids = [str(i) for i in ids if i]
    states: dict[str, tuple[str, str]] = {}
    if not ids:
        return states
    if shutil.which("sacct") is not None:
        result = _slurm(["sacct", "-n", "-P", "-X", "-j", ",".join(ids), "-o", "JobID,State,Reason"], env)
        if result.returncode == 0 and result.stdout.strip():
            for line in result.stdout.strip().split("\n"):
                job, state, *reason = line.split("|")
                states[job] = (state.split()[0], (reason[0] if reason else "").strip())
            return states
    for job in ids:
        result = _slurm(["squeue", "-h", "-r", "--states=all", "-j", job, "-o", "%i|%T|%r"], env)
        for line in result.stdout.strip().split("\n") if result.returncode == 0 else []:
            parts = line.split("|")
            if len(parts) == 3:
                states[parts[0]] = (parts[1], "" if parts[2] == "None" else parts[2])
    return _expand_arrays(states)


def _expand_arrays(states: dict[str, tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """Array tasks that Slurm lists as one record (``123_[0-2,5]``: pending, or cancelled
    before they started) as one entry per task (``123_0``, ``123_1``, ...)."""
    out = dict(states)
    for job, state in states.items():
        if "_[" not in job:
            continue
        base, spec = job.split("_[", 1)
        for part in spec.rstrip("]").split("%")[0].split(","):
            first, _, last = part.partition("-")
            if first.isdigit() and (not last or last.isdigit()):
                for task in range(int(first), int(last or first) + 1):
                    out.setdefault(f"{base}_{task}", state)
    return out


def cancel_jobs(ids: Iterable[str], env: Mapping[str, str] | None = None) -> None:
    """``scancel`` the jobs ``ids`` (a submission refused halfway: its first jobs go too)."""
    ids = [str(i) for i in ids if i]
    if ids:
        _slurm(["scancel", *ids], env)


@contextmanager
def submission_lock(path: Path) -> Iterator[None]:
    """Held while one ``kedro submit`` of a study plans and submits: a second one at the same
    time is refused (an ``flock`` on ``path``, released when the process ends)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = Path(path).read_text().strip() or "another process"
            raise SlurmError(
                f"another `kedro submit` of this study is submitting right now ({other}, lock {path}): "
                "wait for it to finish, then submit again"
            ) from None
        os.ftruncate(handle, 0)
        os.write(handle, f"process {os.getpid()}".encode())
        yield
    finally:
        os.close(handle)
