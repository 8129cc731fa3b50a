"""Model directories on disk, and atomic writes of files and directories: a later run never
finds a half-written one."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def is_model_directory(path: str | Path) -> bool:
    return (Path(path) / "config.json").exists()


@contextmanager
def staged_directory(target: str | Path) -> Iterator[Path]:
    """A fresh folder beside ``target`` to write into; on success it replaces ``target``, on
    failure it is removed, so an interrupted write never leaves a half-written directory."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once at import: os.umask is process-wide, not thread-safe


@contextmanager
def staged_file(target: str | Path) -> Iterator[Path]:
    """A fresh path beside ``target`` to write to; on success it replaces ``target`` (with the
    usual file mode), on failure it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    staging = Path(name)
    try:
        yield staging
        os.chmod(staging, 0o666 & ~_UMASK)  # mkstemp makes 0600
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
