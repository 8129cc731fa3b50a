"""Fetch a dataset by URL into the raw data folder, only when it is not there already.

No network is assumed: when the file or folder is missing and the URL cannot be reached,
the error says where to put a local copy instead.
"""

from __future__ import annotations

import io
import logging
import urllib.request
import zipfile
from pathlib import Path

from ..modeling.storage import staged_directory, staged_file

log = logging.getLogger(__name__)


class DatasetUnavailableError(FileNotFoundError):
    """A dataset is neither on disk nor downloadable."""


def fetch_file(path: str | Path, url: str | None, what: str, timeout: float = 60.0) -> Path:
    """``path`` if it exists, else ``url`` downloaded to ``path`` (atomically)."""
    path = Path(path)
    if path.is_file():
        return path
    data = _download(url, path, what, timeout)
    with staged_file(path) as staging:
        staging.write_bytes(data)
    log.info("%s downloaded from %s to %s (%d bytes)", what, url, path, len(data))
    return path


def fetch_zip_folder(folder: str | Path, url: str | None, member: str, what: str, timeout: float = 120.0) -> Path:
    """``folder`` if it exists, else the ``member`` folder of the zip archive at ``url``
    extracted to ``folder`` (through a staging folder, so no half copy is left)."""
    folder = Path(folder)
    if folder.is_dir() and any(folder.iterdir()):
        return folder
    data = _download(url, folder, what, timeout)
    prefix = member.strip("/") + "/"
    with staged_directory(folder) as staging, zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = [n for n in archive.namelist() if n.startswith(prefix) and not n.endswith("/")]
        if not names:
            raise DatasetUnavailableError(f"{what}: the archive at {url} has no folder {member!r}")
        for name in names:
            target = staging / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(name))
    log.info("%s downloaded from %s to %s (%d files)", what, url, folder, len(names))
    return folder


def _download(url: str | None, dest: Path, what: str, timeout: float) -> bytes:
    if not url:
        raise DatasetUnavailableError(f"{what} not found at {dest} and no URL is configured: put a copy there")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read()
    except OSError as error:  # URLError, timeouts, refused connections
        raise DatasetUnavailableError(
            f"{what} not found at {dest}, and downloading it from {url} failed ({error}): this machine "
            f"may have no network; copy the data to {dest} (or point the parameters at a local copy)"
        ) from error
