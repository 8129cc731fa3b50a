"""Checks of where a run is recorded, before MLflow opens anything: the configuration
environment exists, the project's SQLite store is readable and not silently emptied, created
and migrated by one process at a time, and its experiment keeps artifacts inside the project it
belongs to (rewritten when the project was moved). Knows nothing of Kedro."""

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


def prepare_sqlite_store(database: Path, project: Path, artifact_root: Path | None = None,
                         timeout: float = 600.0) -> None:
    """Make the project's SQLite store ready before MLflow opens it, holding a lock file beside
    it (``mlflow.db.lock``) so that runs started together do not create or migrate it at once
    (MLflow alone leaves a half-migrated store that every later run fails on): check it
    (:func:`check_sqlite_store`), refuse a half-migrated one, create it when missing, and move
    its artifact locations with a moved project (:func:`relocate_moved_project`)."""
    from filelock import FileLock, Timeout

    database = Path(database).resolve()
    database.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(f"{database}.lock")
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise TrackingStoreError(
            f"MLflow store {database} is locked by another process for more than {timeout:.0f} s "
            f"({lock.lock_file}): another run is creating or migrating it. Wait for that run, or, if no "
            f"kedro process is running, the lock is stale: delete {lock.lock_file} and run again."
        ) from None
    try:
        check_sqlite_store(database, artifact_root)
        if database.exists():
            check_schema(database)
        _open_store(database, artifact_root or database.parent / "mlruns")
        relocate_moved_project(database, project, (artifact_root or database.parent / "mlruns").name)
    finally:
        lock.release()


def _latest_schema_revision() -> str:
    """The schema revision the installed MLflow writes: the head of its alembic migrations
    (read with alembic's public API; MLflow's own helper for it is private)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    import mlflow.store

    config = Config()
    config.set_main_option("script_location", str(Path(mlflow.store.__file__).parent / "db_migrations"))
    return ScriptDirectory.from_config(config).get_current_head()


def check_schema(database: Path) -> None:
    """A store whose migration was interrupted (a leftover ``_alembic_tmp_*`` table, no single
    ``alembic_version`` row) or whose schema is not the one this MLflow writes is an error naming
    the fix; MLflow itself would fail on it with a raw SQL error, run after run."""
    with sqlite3.connect(f"{Path(database).resolve().as_uri()}?mode=ro", uri=True) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        versions = (
            [row[0] for row in connection.execute("SELECT version_num FROM alembic_version")]
            if "alembic_version" in tables else []
        )
        runs = connection.execute("SELECT count(*) FROM runs").fetchone()[0] if "runs" in tables else 0
    connection.close()
    leftovers = sorted(t for t in tables if t.startswith("_alembic_tmp_"))
    uri = f"sqlite:///{database}"
    if runs == 0:
        fix = f"nothing is lost by moving it aside: `mv {database} {database}.broken`, then run again"
    else:
        fix = (f"back it up (`cp {database} {database}.bak`), "
               + (f"drop the leftover tables (`sqlite3 {database} 'DROP TABLE {leftovers[0]}'`"
                  + (", and the others listed" if len(leftovers) > 1 else "") + "), " if leftovers else "")
               + f"then `mlflow db upgrade {uri}`")
    if leftovers or len(versions) != 1:
        state = (f"leftover migration tables {leftovers}" if leftovers
                 else f"{len(versions)} schema versions in alembic_version ({versions})")
        raise TrackingStoreError(
            f"MLflow store {database} is half-migrated ({state}): a migration was interrupted, or two runs "
            f"created the store at once. It holds {runs} runs: {fix}."
        )
    head = _latest_schema_revision()
    if versions[0] != head:
        raise TrackingStoreError(
            f"MLflow store {database} has schema version {versions[0]}, but the installed MLflow expects "
            f"{head}: it was made by another MLflow version. If that version is older, {fix}; if newer, "
            f"install the project's pinned MLflow (`pip install -e .`)."
        )


def _open_store(database: Path, artifact_root: Path) -> None:
    """Create the store's tables (and MLflow's default experiment) when they are missing, as
    MLflow would on first use, here under the lock."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    SqlAlchemyStore(f"sqlite:///{database}", str(artifact_root))


# Columns that hold a local artifact path, rewritten when a project moves.
_ARTIFACT_COLUMNS = {
    "experiments": ("artifact_location",),
    "runs": ("artifact_uri",),
    "logged_models": ("artifact_location",),
    "model_versions": ("source", "storage_location"),
}


def relocate_moved_project(database: Path, project: Path, artifacts: str = "mlruns") -> int:
    """The project's own store (``database`` inside ``project``) keeps absolute artifact paths
    (MLflow resolves ``./mlruns`` when an experiment is made). When they point into
    ``OLD/mlruns`` and ``OLD`` no longer exists, the project was moved (``mv``): rewrite ``OLD``
    to ``project`` in every stored path and say so once. When ``OLD`` still exists the store was
    copied, and :func:`check_artifact_location` says so. Returns the number of rows rewritten."""
    database, project = Path(database).resolve(), Path(project).resolve()
    try:
        database.relative_to(project)
    except ValueError:
        return 0
    connection = sqlite3.connect(database)
    try:
        locations = [row[0] for row in connection.execute("SELECT artifact_location FROM experiments")]
        moved = set()
        for location in locations:
            folder = local_artifact_dir(location or "")
            if folder is None or not folder.is_absolute() or artifacts not in folder.parts:
                continue
            parts = folder.parts
            old = Path(*parts[: len(parts) - 1 - parts[::-1].index(artifacts)])
            if old != project and not _inside(old, project) and not old.exists():
                moved.add(old)
        rewritten = 0
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        with connection:
            for old in sorted(moved):
                for prefix_old, prefix_new in ((old.as_uri(), project.as_uri()), (str(old), str(project))):
                    for table, columns in _ARTIFACT_COLUMNS.items():
                        if table not in tables:
                            continue
                        for column in columns:
                            # Only whole path components: OLD followed by "/" (or OLD itself).
                            rewritten += connection.execute(
                                f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                                f"WHERE substr({column}, 1, ?) = ?",
                                (prefix_new + "/", len(prefix_old) + 2, len(prefix_old) + 1, prefix_old + "/"),
                            ).rowcount
        for old in sorted(moved):
            log.warning(
                "MLflow store %s was made when the project was at %s, which no longer exists: the project was "
                "moved, so its stored artifact locations now point into %s (%d paths rewritten; the run history "
                "is kept).", database, old, project, rewritten,
            )
        return rewritten
    finally:
        connection.close()


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


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
