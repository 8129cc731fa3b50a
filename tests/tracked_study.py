"""One `kedro run --env=test` tracked by a real MLflow server, shared by the tracking, report,
kedro-viz and notebook tests (session-scoped fixtures; conftest.py imports them)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
KEDRO = [sys.executable, "-m", "kedro"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[:3]} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"nothing answered at {url} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def copy_project(dest: Path) -> Path:
    """The project's configuration in ``dest`` (data/ empty, no conf/local), as a Kedro project."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("conf", "pyproject.toml", ".telemetry"):
        src = PROJECT_ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("local"))
        else:
            shutil.copy(src, dest / name)
    (dest / "conf" / "local").mkdir(exist_ok=True)
    (dest / "src").mkdir(exist_ok=True)  # bootstrap_project wants a source folder; the package is installed
    return dest


def kedro(project: Path, *args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """A kedro CLI command in ``project`` (single-threaded torch, wide log lines)."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [*KEDRO, *args], cwd=project, env=environment, capture_output=True, text=True, timeout=timeout
    )


@dataclass(frozen=True)
class MlflowServer:
    uri: str
    root: Path


@dataclass(frozen=True)
class TrackedStudy:
    project: Path
    tracking_uri: str
    log: str


@contextlib.contextmanager
def running_mlflow_server(root: Path) -> Iterator[MlflowServer]:
    """A real `mlflow server` on a free localhost port: SQLite backend in ``root``, artifacts
    served by the server (clients upload through HTTP); stopped on exit."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = root / "server.log"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--serve-artifacts", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", process, timeout=180, log=log)
        yield MlflowServer(f"http://127.0.0.1:{port}", root)
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen, timeout: float = 30) -> None:
    """Terminate a server started for a test; kill it when it does not stop in ``timeout``."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Iterator[MlflowServer]:
    """The tracking server of the one tracked test study (tests/test_tracking.py reads it)."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


@pytest.fixture(scope="session")
def tracked_study(mlflow_server, tmp_path_factory) -> TrackedStudy:
    """`kedro run --env=test` (every pipeline of ``__default__``, report included) in a
    throw-away project copy, tracked by the server through MLFLOW_TRACKING_URI."""
    project = copy_project(tmp_path_factory.mktemp("tracked-study"))
    result = kedro(project, "run", "--env=test", env={"MLFLOW_TRACKING_URI": mlflow_server.uri})
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"kedro run --env=test failed:\n{log[-6000:]}"
    return TrackedStudy(project, mlflow_server.uri, log)
