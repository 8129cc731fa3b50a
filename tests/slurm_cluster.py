"""A real single-node Slurm on localhost for the submit tests: munged, slurmctld and slurmd
from Debian's ``slurm-wlm`` and ``munge`` packages, started in a temporary folder with a
generated ``slurm.conf`` and stopped afterwards. Clients (sbatch, squeue, scancel) find it
through ``SLURM_CONF``, which the fixture sets for the test's processes.

Missing binaries: :class:`SlurmUnavailable` naming the packages to install, which the tests'
fixture (``slurm_cluster`` in conftest.py) turns into a skip on a developer's machine and a
failure in CI (``FKR_REQUIRE_SLURM`` or ``CI`` set: ``.ci/run`` installs them, so a missing
one is a broken CI). Needs nothing but the standard library (``python tests/slurm_cluster.py``
after ``pip install -e .``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo", "scontrol")
PACKAGES = "apt-get install -y slurm-wlm munge"
PARTITION = "debug"


class SlurmUnavailable(RuntimeError):
    """The single-node Slurm cannot start here; ``required``: CI, where it must."""

    def __init__(self, reason: str):
        self.required = bool(os.environ.get("FKR_REQUIRE_SLURM") or os.environ.get("CI"))
        super().__init__(f"{reason}; .ci/run installs them (and sets FKR_REQUIRE_SLURM), so CI must have them"
                         if self.required and "install" in reason else reason)


@dataclass(frozen=True)
class SlurmCluster:
    root: Path
    conf: Path
    env: dict[str, str]  # SLURM_CONF for clients
    partition: str
    cpus: int

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(command, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=60, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr}")
        return result

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.log"):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name} ---\n{path.read_text()[-3000:]}")
        return "\n".join(parts)


def missing_binaries() -> list[str]:
    search = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    return [name for name in BINARIES if shutil.which(name, path=search) is None]


def _which(name: str) -> str:
    search = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    found = shutil.which(name, path=search)
    assert found is not None
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _node_resources() -> tuple[int, int]:
    """This machine's CPUs and memory (MB), as slurmd reports them (``slurmd -C``)."""
    out = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, timeout=60, check=False).stdout
    fields = dict(item.split("=", 1) for item in out.split() if "=" in item)
    cpus = int(fields.get("CPUs", os.cpu_count() or 1))
    memory = int(fields.get("RealMemory", 1024))
    return cpus, memory


def slurm_conf(root: Path, host: str, cpus: int, memory_mb: int) -> str:
    return "\n".join(
        [
            "ClusterName=fkrtest",
            f"SlurmctldHost={host}",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            f"AuthInfo=socket={root / 'munge.socket'}",
            "CryptoType=crypto/munge",
            "MpiDefault=none",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "SchedulerType=sched/backfill",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "ReturnToService=2",
            "KillWait=10",
            "MinJobAge=600",
            f"StateSaveLocation={root / 'state'}",
            f"SlurmdSpoolDir={root / 'spool'}",
            f"SlurmctldPidFile={root / 'slurmctld.pid'}",
            f"SlurmdPidFile={root / 'slurmd.pid'}",
            f"SlurmctldLogFile={root / 'slurmctld.log'}",
            f"SlurmdLogFile={root / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "DefMemPerCPU=1024",
            f"NodeName={host} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


def start_cluster(root: Path) -> tuple[SlurmCluster, list[subprocess.Popen]]:
    missing = missing_binaries()
    if missing:
        raise SlurmUnavailable(f"Slurm binaries not found: {', '.join(missing)} (install them: `{PACKAGES}`)")
    if os.geteuid() != 0:
        raise SlurmUnavailable("the single-node Slurm runs slurmd as root (as in CI's container); run it as root")
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    for folder in ("state", "spool"):
        (root / folder).mkdir(exist_ok=True)
    key = root / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    host = socket.gethostname().split(".")[0]
    cpus, memory = _node_resources()
    conf = root / "slurm.conf"
    conf.write_text(slurm_conf(root, host, cpus, memory))
    env = {"SLURM_CONF": str(conf)}
    environment = {**os.environ, **env}
    processes: list[subprocess.Popen] = []

    def spawn(*command: str) -> None:
        log = (root / f"{Path(command[0]).name}.out").open("w")
        processes.append(subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT, cwd=root))

    spawn(
        _which("munged"), "-F", "--force", f"--socket={root / 'munge.socket'}", f"--key-file={key}",
        f"--pid-file={root / 'munged.pid'}", f"--log-file={root / 'munged.log'}", f"--seed-file={root / 'munged.seed'}",
    )
    _wait(lambda: (root / "munge.socket").exists(), 30, "munged did not create its socket", root, processes)
    spawn(_which("slurmctld"), "-D", "-i", "-f", str(conf))
    spawn(_which("slurmd"), "-D", "-f", str(conf))
    cluster = SlurmCluster(root, conf, env, PARTITION, cpus)

    def node_idle() -> bool:
        out = cluster.run(_which("sinfo"), "-h", "-o", "%T", check=False).stdout.strip()
        return out.startswith(("idle", "mixed", "allocated"))

    _wait(node_idle, 60, "the Slurm node did not become idle", root, processes, cluster)
    return cluster, processes


def stop_cluster(processes: list[subprocess.Popen]) -> None:
    for process in reversed(processes):
        if process.poll() is None:
            process.terminate()
    for process in reversed(processes):
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait(condition, timeout: float, what: str, root: Path, processes, cluster: SlurmCluster | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        dead = [p.args[0] for p in processes if p.poll() is not None]
        if dead:
            break
        time.sleep(0.5)
    logs = cluster.logs() if cluster else ""
    outs = "\n".join(f"--- {p.name} ---\n{p.read_text()[-2000:]}" for p in root.glob("*.out"))
    stop_cluster(processes)
    raise RuntimeError(f"{what} within {timeout:.0f} s:\n{outs}\n{logs}")


@contextmanager
def running_cluster(root: Path) -> Iterator[SlurmCluster]:
    """A single-node Slurm in ``root`` while the block runs; its jobs cancelled, then stopped."""
    cluster, processes = start_cluster(root)
    try:
        yield cluster
    finally:
        cluster.run(_which("scancel"), "--user=root", check=False)
        stop_cluster(processes)


if __name__ == "__main__":
    # A single-node Slurm for trying `kedro submit` by hand (docs/scale_out.md):
    #   python tests/slurm_cluster.py /tmp/fkr-slurm    (as root; Ctrl-C or SIGTERM stops it)
    import signal
    import sys

    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/fkr-slurm").resolve()
    try:
        running, started = start_cluster(folder)
    except SlurmUnavailable as error:
        sys.exit(str(error))
    print(f"single-node Slurm up ({running.cpus} CPUs, partition {running.partition}); in another shell:\n"
          f"  export SLURM_CONF={running.conf}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        signal.pause()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        stop_cluster(started)
