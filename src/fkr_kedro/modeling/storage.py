"""Model directories on disk: how to tell one is there, and how to write one atomically."""

from __future__ import annotations

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
