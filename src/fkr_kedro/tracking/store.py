"""Checks of where a run is recorded, before MLflow opens anything: the configuration
environment exists, the project's SQLite store is readable and not silently emptied, and its
experiment keeps artifacts inside the project it belongs to. Knows nothing of Kedro."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from urllib.parse import unquote, urlparse

log = logging.getLogger(__name__)

_SQLITE_HEADER = b"SQLite format 3\x00"


class TrackingStoreError(RuntimeError):
    """The tracking store or its configuration cannot be used as it is; the message says why
    and what to do."""


def check_env(conf_source: Path, env: str) -> None:
    """``env`` must be a folder of ``conf_source`` (``kedro run --env=NAME``): an unknown env
    would otherwise run on base alone and fail far from the cause."""
    conf_source = Path(conf_source)
    if not conf_source.is_dir() or (conf_source / env).is_dir():
        return
    available = sorted(p.name for p in conf_source.iterdir() if p.is_dir() and not p.name.startswith("."))
    raise TrackingStoreError(
        f"configuration environment {env!r} does not exist: there is no folder {conf_source / env}. "
        f"The environments are the folders of {conf_source}: {', '.join(available)} "
        f"(e.g. `kedro run --env={'test' if 'test' in available else available[0] if available else 'local'}`)"
    )


def sqlite_path(uri: str | None, cwd: Path) -> Path | None:
    """The database file of a ``sqlite:`` tracking URI (relative paths from ``cwd``, as
    SQLAlchemy reads them), None for any other store."""
    if not uri or not uri.startswith("sqlite:///"):
        return None  # sqlite:// (in memory) or not SQLite
    # sqlite:///mlflow.db is relative, sqlite:////abs/mlflow.db absolute; drop any ?query.
    path = unquote(uri.removeprefix("sqlite:///").split("?", 1)[0])
    if not path or path == ":memory:":
        return None
    path = Path(path)
    return path if path.is_absolute() else cwd / path


def check_sqlite_store(database: Path, artifact_root: Path | None = None) -> None:
    """Stop before MLflow opens a store that would lose runs silently: a file that is not an
    SQLite database (MLflow: ``file is not a database``) or an emptied one (MLflow would create
    fresh tables in it). A missing file with artifacts of earlier runs under ``artifact_root``
    is a warning: a new store is started, the earlier runs are not in it."""
    database = Path(database)
    if not database.exists():
        if artifact_root is not None and _holds_run_artifacts(artifact_root):
            log.warning(
                "MLflow store %s does not exist, but %s holds artifacts of earlier runs: a new, empty store "
                "is created and those runs will not be listed. To keep them, stop (Ctrl-C) and put the "
                "store back from a backup.",
                database, artifact_root,
            )
        return
    size = database.stat().st_size
    fix_move = f"`mv {database} {database}.broken`"
    if size == 0:
        raise TrackingStoreError(
            f"MLflow store {database} is empty (0 bytes): the runs it held are gone, and MLflow would "
            f"silently start a new store in it. Restore it from a backup, or start a new store on purpose: "
            f"{fix_move} (or delete the file), then run again."
        )
    with database.open("rb") as handle:
        header = handle.read(len(_SQLITE_HEADER))
    if header != _SQLITE_HEADER:
        raise TrackingStoreError(
            f"MLflow store {database} is not an SQLite database (the file is corrupt or was overwritten). "
            f"Restore it from a backup, or move it aside and start a new store: {fix_move}."
        )
    try:
        connection = sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "runs" in tables:
                connection.execute("SELECT count(*) FROM runs").fetchone()
        finally:
            connection.close()
    except sqlite3.DatabaseError as error:
        raise TrackingStoreError(
            f"MLflow store {database} cannot be read ({error}). Restore it from a backup "
            f"(`sqlite3 {database} .recover` may save what is left), or move it aside and start a new "
            f"store: {fix_move}."
        ) from error
    if not {"experiments", "runs"} <= tables:
        raise TrackingStoreError(
            f"MLflow store {database} is an SQLite database without MLflow's tables "
            f"(it holds {sorted(tables) or 'no tables'}): it was emptied or is another program's file. "
            f"Restore it from a backup, or start a new store on purpose: {fix_move}, then run again."
        )


def local_artifact_dir(location: str) -> Path | None:
    """The local folder of an artifact location (``/abs/path`` or ``file:///abs/path``),
    None for a remote one (``mlflow-artifacts:``, ``s3://`` ...)."""
    parsed = urlparse(location)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path))
    return None


def check_artifact_location(experiment: str, location: str, database: Path, project: Path) -> None:
    """The project's own store (``database`` inside ``project``) must keep the experiment's
    artifacts inside the project: MLflow stores absolute artifact locations, so a copied
    project's ``mlflow.db`` would keep writing into the original project's ``mlruns/``."""
    project = Path(project).resolve()
    try:
        Path(database).resolve().relative_to(project)
    except ValueError:
        return  # a store outside the project: its artifact locations are its own business
    folder = local_artifact_dir(location)
    if folder is None:
        return
    try:
        folder.resolve().relative_to(project)
    except ValueError:
        raise TrackingStoreError(
            f"MLflow store {database} keeps the artifacts of experiment {experiment!r} in {folder}, outside "
            f"this project ({project}): the store was copied from another project, and this run would write "
            f"into that project's files. Start a store of this project's own: `mv {database} "
            f"{Path(database).name}.copied` (the next run creates a new one with artifacts in "
            f"{project / 'mlruns'}), or point MLFLOW_TRACKING_URI at the store you mean to share."
        ) from None


def _holds_run_artifacts(artifact_root: Path) -> bool:
    """Whether ``artifact_root`` (``mlruns/``) holds any run's artifact folder."""
    if not artifact_root.is_dir():
        return False
    return any(p.is_dir() for p in artifact_root.glob("*/*/artifacts")) or any(
        p.is_dir() for p in artifact_root.glob("*/artifacts")
    )
