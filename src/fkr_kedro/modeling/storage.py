"""Model directories on disk: atomic writes of files and directories (a later run never finds
a half-written one), a manifest of every model directory's files with their sha256 (a file
changed or cut short after it was written is found when the directory is loaded), and the
removal of staging folders that a killed process left behind.

* :func:`staged_directory` / :func:`staged_file` write beside the target and rename into
  place; a staged directory that holds weights (``*.safetensors``) gets :data:`MANIFEST_FILE`
  (size and sha256 of each of its files) before the rename. Staging names carry the writer's
  process id (``.gptq_w4_g32.pid1234.k2j3h4/``), so :func:`remove_dead_staging` removes those
  of processes that are gone and leaves those of running ones alone.
* :func:`verify_weights` checks a directory against its manifest (sizes first, then the
  hashes; each file is hashed once per process while its size and mtime are unchanged);
  :func:`weights_digest` is one content hash of a directory's weights, the same wherever the
  directory lies (it fingerprints the source of a quantized variant).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

MANIFEST_FILE = "weights_manifest.json"
WEIGHT_GLOB = "*.safetensors"
_STAGING = re.compile(r"\.(?P<target>.+)\.pid(?P<pid>\d+)\.[^.]+(\.tmp)?")
# Staging folders written before process ids were recorded (``.gptq_w4_g32.k2j3h4``): their
# writer cannot be asked, so they count as dead once untouched for this long.
LEGACY_STAGING_AGE_S = 3600


class WeightsError(ValueError):
    """A model directory whose files do not match its manifest, or that has none. The
    message says what is wrong; the caller adds which model it is and how to rebuild it."""


class ManifestMissingError(WeightsError):
    """A model directory written before manifests were recorded (or by another tool)."""


def is_model_directory(path: str | Path) -> bool:
    return (Path(path) / "config.json").exists()


# --- atomic writes --------------------------------------------------------------------------


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask is process-wide, not thread-safe


@contextmanager
def staged_directory(target: str | Path) -> Iterator[Path]:
    """A fresh folder beside ``target`` to write into; on success it replaces ``target``, on
    failure it is removed, so an interrupted write never leaves a half-written directory.
    A folder holding weight files gets its manifest (:func:`write_manifest`) before the
    rename. Staging folders of dead processes beside ``target`` are removed first."""
    staging = new_staging_directory(target)
    try:
        yield staging
        replace_with_staging(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def new_staging_directory(target: str | Path) -> Path:
    """:func:`staged_directory` in two steps, for a writer and a saver that are not the same
    code (a node writes, its dataset replaces): a fresh folder beside ``target``, named after
    this process so :func:`remove_dead_staging` removes it if the process dies first."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_staging(target.parent)
    return Path(tempfile.mkdtemp(prefix=_staging_prefix(target), dir=target.parent))


def replace_with_staging(staging: str | Path, target: str | Path, manifest: bool = True) -> None:
    """Move a folder from :func:`new_staging_directory` into place: its manifest first (when
    it holds weight files; ``manifest=False``: the writer wrote it), then it replaces
    ``target``."""
    staging, target = Path(staging), Path(target)
    if manifest and any(staging.glob(WEIGHT_GLOB)):
        write_manifest(staging)
    os.chmod(staging, 0o777 & ~_UMASK)  # mkdtemp makes 0700
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)


@contextmanager
def staged_file(target: str | Path) -> Iterator[Path]:
    """A fresh path beside ``target`` to write to; on success it replaces ``target`` (with the
    usual file mode), on failure it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_staging(target.parent)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=_staging_prefix(target), suffix=".tmp")
    os.close(fd)
    staging = Path(name)
    try:
        yield staging
        os.chmod(staging, 0o666 & ~_UMASK)  # mkstemp makes 0600
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)


def _staging_prefix(target: Path) -> str:
    return f".{target.name}.pid{os.getpid()}."


def _process_alive(pid: int, since: float | None = None) -> bool:
    """Whether process ``pid`` runs; with ``since`` (a time the writer was known to run),
    a process started later is another one that reuses the id (e.g. after a restart)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    started = _process_start_time(pid)
    return since is None or started is None or started <= since + 1


def _process_start_time(pid: int) -> float | None:
    """When ``pid`` started (seconds since the epoch), where /proc tells (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        boot = next(
            float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def remove_dead_staging(folder: str | Path) -> list[Path]:
    """Remove the staging folders and files in ``folder`` whose writing process is dead
    (a run killed while writing). Those of live processes stay; so does staging without a
    process id (written before ids were recorded) until it is :data:`LEGACY_STAGING_AGE_S`
    old. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        if not entry.name.startswith("."):
            continue
        match = _STAGING.fullmatch(entry.name)
        if match is not None:
            dead = not _process_alive(int(match["pid"]), since=entry.lstat().st_mtime)
        else:
            dead = _legacy_staging(entry) and time.time() - entry.lstat().st_mtime > LEGACY_STAGING_AGE_S
        if not dead:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        log.warning("Removed %s, left by a process that no longer runs (an interrupted write)", entry)
        removed.append(entry)
    return removed


def _legacy_staging(entry: Path) -> bool:
    """``.<target>.<8 random characters>`` (tempfile's folder names) or
    ``.<target>.<8 random characters>.tmp`` (its file names): staging from before process
    ids were recorded."""
    if entry.is_symlink():
        return False
    if entry.is_dir():
        return re.fullmatch(r"\.[^.].*\.[a-z0-9_]{8}", entry.name) is not None
    return re.fullmatch(r"\.[^.].*\.[a-z0-9_]{8}\.tmp", entry.name) is not None


# --- manifests ------------------------------------------------------------------------------

_HASHES: dict[tuple, str] = {}  # (device, inode, size, mtime_ns) -> sha256, this process only


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, hashed once per process while its size and mtime stay."""
    stat = Path(path).stat()
    key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        _HASHES[key] = digest.hexdigest()
    return _HASHES[key]


def write_manifest(model_dir: str | Path) -> dict:
    """Record size and sha256 of every file of ``model_dir`` (top level, the manifest
    itself excepted) in :data:`MANIFEST_FILE`. Returns the manifest."""
    model_dir = Path(model_dir)
    files = {
        p.name: {"size": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(model_dir.iterdir())
        if p.is_file() and p.name != MANIFEST_FILE
    }
    manifest = {"format": 1, "files": files}
    (model_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(model_dir: str | Path) -> dict | None:
    """The manifest of ``model_dir``, or None when it has none."""
    path = Path(model_dir) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        if not all(isinstance(v.get("size"), int) and isinstance(v.get("sha256"), str) for v in files.values()):
            raise ValueError("entries without size and sha256")
    except (ValueError, KeyError, AttributeError, TypeError) as error:
        raise WeightsError(f"its manifest {path.name} is unreadable ({error})") from None
    return manifest


def recorded_files_problem(folder: Path, files: dict[str, dict], manifest_name: str) -> tuple[str, str] | None:
    """The first way the files a manifest lists (``{name: {"size", "sha256"}}``, relative to
    ``folder``) differ from what is on disk, as ``(kind, message)`` with kind ``missing``,
    ``size`` or ``sha256``; None when every file matches. Sizes are compared first: a cheap
    check that catches truncation before any file is hashed."""
    for name, entry in files.items():
        path = folder / name
        if not path.is_file():
            return "missing", f"{name} is missing (listed in {manifest_name})"
        size = path.stat().st_size
        if size != entry["size"]:
            what = "truncated" if size < entry["size"] else "longer than when written"
            return "size", f"{name} is {what} ({size} bytes, {entry['size']} when written)"
    for name, entry in files.items():
        if file_sha256(folder / name) != entry["sha256"]:
            return "sha256", (f"{name} does not match the sha256 recorded when it was written (same size, other "
                              f"bytes: corrupted or overwritten)")
    return None


def verify_weights(model_dir: str | Path) -> dict:
    """Check every file listed in the manifest of ``model_dir``: present, same size, same
    sha256 (sizes of all files first, so a truncated file is found without hashing). Raises
    :class:`ManifestMissingError` when there is no manifest and :class:`WeightsError`
    naming the first bad file otherwise; returns the manifest."""
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    if manifest is None:
        manifest = _hub_manifest(model_dir)
    if manifest is None:
        raise ManifestMissingError(
            f"it has no {MANIFEST_FILE} (written before weight manifests were recorded, or by another "
            f"tool), so its files cannot be checked"
        )
    files = manifest["files"]
    unlisted = sorted(p.name for p in model_dir.glob(WEIGHT_GLOB) if p.name not in files)
    if unlisted:
        raise WeightsError(f"weight file(s) {', '.join(unlisted)} were added after it was written (not in {MANIFEST_FILE})")
    problem = recorded_files_problem(model_dir, files, MANIFEST_FILE)
    if problem is not None:
        raise WeightsError(problem[1])
    if not any(Path(name).match(WEIGHT_GLOB) for name in files):
        raise WeightsError(f"its {MANIFEST_FILE} lists no weight files")
    return manifest


def weights_digest(model_dir: str | Path) -> str:
    """One sha256 over the names and sha256 of the weight files of ``model_dir``: from its
    manifest when it has one (sizes checked), else from the Hugging Face cache's blob names
    (which are the sha256 of their content) when the files link there, else hashed. The
    same wherever the directory is copied or moved."""
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    weights = sorted(model_dir.glob(WEIGHT_GLOB))
    if not weights:
        raise FileNotFoundError(f"no {WEIGHT_GLOB} weight files in {model_dir}")
    digest = hashlib.sha256()
    for path in weights:
        entry = (manifest or {}).get("files", {}).get(path.name)
        if entry is not None and entry["size"] == path.stat().st_size:
            sha = entry["sha256"]
        else:
            sha = _hub_blob_sha256(path) or file_sha256(path)
        digest.update(f"{path.name}\0{sha}\n".encode())
    return digest.hexdigest()


def _hub_manifest(model_dir: Path) -> dict | None:
    """A manifest from the Hugging Face cache when every weight file of ``model_dir`` links
    to a blob named by its sha256 (a hub snapshot, or a link to one)."""
    weights = sorted(model_dir.glob(WEIGHT_GLOB))
    shas = [_hub_blob_sha256(p) for p in weights]
    if not weights or None in shas:
        return None
    return {
        "format": 1,
        "files": {p.name: {"size": p.stat().st_size, "sha256": sha} for p, sha in zip(weights, shas)},
    }


def _hub_blob_sha256(path: Path) -> str | None:
    """A Hugging Face cache file links to ``blobs/<sha256>`` (for LFS files such as weights)."""
    if not path.is_symlink():
        return None
    blob = path.resolve()
    if blob.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", blob.name):
        return blob.name
    return None
