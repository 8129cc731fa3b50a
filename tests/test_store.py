"""The project's MLflow store on real files and real processes: created by one process at a
time, a half-migrated store refused with the fix, a moved project keeps its history, and the
documented `mlflow server` command answers calls made to the machine's host name."""

from __future__ import annotations

import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from filelock import FileLock
from mlflow.tracking import MlflowClient

from fkr_kedro.tracking import (
    TrackingStoreError,
    check_artifact_location,
    prepare_sqlite_store,
)
from tracked_study import PROJECT_ROOT, free_port, stop_process, wait_for_http

_PREPARE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from fkr_kedro.tracking import prepare_sqlite_store
    database, timeout, start = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    time.sleep(max(0.0, start - time.time()))  # both processes start creating at once
    prepare_sqlite_store(database, database.parent, timeout=timeout)
    from mlflow.tracking import MlflowClient
    MlflowClient(f"sqlite:///{database}").search_experiments()
""")


def _prepare_in_process(database: Path, timeout: float = 600, start: float = 0.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _PREPARE, str(database), str(timeout), str(start)],
                            cwd=database.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _tables(database: Path) -> set[str]:
    with sqlite3.connect(database) as connection:
        return {r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_two_processes_creating_the_store_at_once_both_succeed(tmp_path):
    import time

    database = tmp_path / "mlflow.db"
    start = time.time() + 8  # after both interpreters have imported MLflow
    processes = [_prepare_in_process(database, start=start) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    assert not any(t.startswith("_alembic_tmp_") for t in _tables(database))
    from mlflow.store.db.utils import _get_latest_schema_revision

    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (_get_latest_schema_revision(),)
        ]
    prepare_sqlite_store(database, tmp_path)  # a later run opens it as it is


def test_the_store_is_created_under_a_lock_that_a_second_process_waits_for(tmp_path):
    database = tmp_path / "mlflow.db"
    with FileLock(f"{database}.lock"):  # another run is creating the store
        process = _prepare_in_process(database, timeout=1)
        output = process.communicate(timeout=300)[0]
    assert process.returncode != 0
    assert "is locked by another process" in output and f"{database}.lock" in output, output[-3000:]
    assert not database.exists()  # it did not create the store behind the lock holder's back


def _store_with_a_run(project: Path, monkeypatch) -> tuple[Path, str]:
    """A real store in ``project`` (as a run makes it), with one run and one artifact."""
    monkeypatch.chdir(project)
    database = project / "mlflow.db"
    prepare_sqlite_store(database, project, artifact_root=project / "mlruns")
    client = MlflowClient(f"sqlite:///{database}")
    experiment = client.create_experiment("fkr_kedro")
    run = client.create_run(experiment)
    (project / "note.txt").write_text("kept")
    client.log_artifact(run.info.run_id, str(project / "note.txt"))
    client.set_terminated(run.info.run_id)
    return database, run.info.run_id


def test_a_half_migrated_store_is_an_error_naming_the_fix(tmp_path, monkeypatch):
    database, _ = _store_with_a_run(tmp_path, monkeypatch)
    with sqlite3.connect(database) as connection:  # what two concurrent creations leave behind
        connection.execute("CREATE TABLE _alembic_tmp_tags (key VARCHAR(250))")
    with pytest.raises(TrackingStoreError, match=r"half-migrated.*_alembic_tmp_tags.*holds 1 runs: .*"
                                                 r"DROP TABLE _alembic_tmp_tags.*mlflow db upgrade"):
        prepare_sqlite_store(database, tmp_path)
    # The fix it names works.
    with sqlite3.connect(database) as connection:
        connection.execute("DROP TABLE _alembic_tmp_tags")
    prepare_sqlite_store(database, tmp_path)

    with sqlite3.connect(database) as connection:  # a second version row (an online migration raced)
        head = connection.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        connection.execute("INSERT INTO alembic_version VALUES ('0a8213491aaa')")
    with pytest.raises(TrackingStoreError, match=r"half-migrated \(2 schema versions"):
        prepare_sqlite_store(database, tmp_path)
    with sqlite3.connect(database) as connection:  # a store made by an older MLflow
        connection.execute("DELETE FROM alembic_version")
        connection.execute("INSERT INTO alembic_version VALUES ('0a8213491aaa')")
    with pytest.raises(TrackingStoreError, match=rf"schema version 0a8213491aaa, but the installed MLflow "
                                                 rf"expects {head}.*mlflow db upgrade sqlite:///{database}"):
        prepare_sqlite_store(database, tmp_path)


def test_a_half_migrated_store_without_runs_is_moved_aside(tmp_path):
    database = tmp_path / "mlflow.db"
    prepare_sqlite_store(database, tmp_path)
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE _alembic_tmp_tags (key VARCHAR(250))")
    with pytest.raises(TrackingStoreError, match=rf"holds 0 runs: .*`mv {database} {database}.broken`"):
        prepare_sqlite_store(database, tmp_path)


def test_a_moved_project_keeps_its_history_and_a_copied_one_is_refused(tmp_path, monkeypatch, caplog):
    original = tmp_path / "original"
    original.mkdir()
    database, run_id = _store_with_a_run(original, monkeypatch)

    copy = tmp_path / "copy"
    shutil.copytree(original, copy)  # the original still exists: a copy, not rewritten
    monkeypatch.chdir(copy)
    prepare_sqlite_store(copy / "mlflow.db", copy, artifact_root=copy / "mlruns")
    location = MlflowClient(f"sqlite:///{copy / 'mlflow.db'}").get_experiment_by_name("fkr_kedro").artifact_location
    with pytest.raises(TrackingStoreError, match="copied from another project"):
        check_artifact_location("fkr_kedro", location, copy / "mlflow.db", copy)

    moved = tmp_path / "moved"
    monkeypatch.chdir(tmp_path)
    shutil.move(original, moved)
    monkeypatch.chdir(moved)
    with caplog.at_level("WARNING", logger="fkr_kedro.tracking.store"):
        prepare_sqlite_store(moved / "mlflow.db", moved, artifact_root=moved / "mlruns")
    assert [r for r in caplog.records if "was moved" in r.getMessage()]
    client = MlflowClient(f"sqlite:///{moved / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fkr_kedro")
    check_artifact_location("fkr_kedro", experiment.artifact_location, moved / "mlflow.db", moved)
    run = client.get_run(run_id)  # the history is there, and its artifact is read from the new place
    assert str(moved) in run.info.artifact_uri and str(original) not in run.info.artifact_uri
    local = client.download_artifacts(run_id, "note.txt", str(tmp_path))
    assert Path(local).read_text() == "kept"
    caplog.clear()
    with caplog.at_level("WARNING", logger="fkr_kedro.tracking.store"):  # said once
        prepare_sqlite_store(moved / "mlflow.db", moved, artifact_root=moved / "mlruns")
    assert not [r for r in caplog.records if "was moved" in r.getMessage()]


def _documented_server_command() -> str:
    """The `mlflow server` command of docs/scale_out.md, as a user pastes it."""
    text = (PROJECT_ROOT / "docs" / "scale_out.md").read_text()
    found = re.search(r"^mlflow server .*?&$", text, flags=re.S | re.M)
    assert found, "docs/scale_out.md gives no `mlflow server ... &` command"
    return found.group(0).removesuffix("&").replace("\\\n", " ")


def _status(port: int, host: str) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1",
                                     headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.parametrize("documented", [True, False], ids=["documented", "without-allowed-hosts"])
def test_the_documented_mlflow_server_answers_the_hosts_name(tmp_path, documented):
    command = _documented_server_command()
    assert "--allowed-hosts" in command
    if not documented:  # the command the docs gave before: every call by host name is refused
        command = re.sub(r"--allowed-hosts \"[^\"]*\"", "", command)
    port = free_port()
    command = f"exec {command.replace('5000', str(port)).replace('$PWD', str(tmp_path))} --workers 1"
    log = tmp_path / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(["bash", "-c", command], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", process, timeout=180, log=log)
        # Clients use MLFLOW_TRACKING_URI=http://$(hostname):PORT: that Host header.
        status = _status(port, f"{socket.gethostname()}:{port}")
        assert status == (200 if documented else 403), log.read_text()[-3000:]
        assert _status(port, f"localhost:{port}") == 200
    finally:
        stop_process(process)
