"""Plain ``sbatch`` scripts for the jobs of a :class:`~fkr_kedro.scaleout.graph.JobGraph`,
the checks before submitting (``sbatch`` on PATH, the partitions exist) and submission with
``--dependency``."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
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
) -> JobScript:
    """One job's script. An array job runs ``kedro run <kedro_args> --namespaces=<its
    namespace>``; ``done_dir`` gets one ``<namespace>.done`` file per array task that
    succeeded; ``missing_check`` (report job) lists the namespaces whose ``.done`` file is
    looked for, the absent ones exported as ``FKR_MISSING_NAMESPACES`` for the report."""
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
    command = f"kedro run {_quote(kedro_args)}"
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
