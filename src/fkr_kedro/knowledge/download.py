"""Fetch a dataset by URL into the raw data folder, only when it is not there already,
and check it against a known hash.

No network is assumed: when the file or folder is missing and the URL cannot be reached,
the error says where to put a local copy instead. With a ``sha256``, what is downloaded is
checked before anything is written, and a copy already on disk is checked before it is
used: a file changed upstream, truncated in transit or edited locally is an
:class:`IntegrityError` naming the file, both hashes and the fix, never silently different
data. A single file is hashed as its bytes (``sha256sum``); a folder extracted from an
archive by :func:`folder_sha256` over its ``*.json`` files (names and contents), because
GitHub does not promise byte-identical archives of a commit over time, while the files of
the commit are fixed.
"""

from __future__ import annotations

import hashlib
import io
import logging
import urllib.request
import zipfile
from pathlib import Path

from ..modeling.storage import staged_directory, staged_file

log = logging.getLogger(__name__)


class DatasetUnavailableError(FileNotFoundError):
    """A dataset is neither on disk nor downloadable."""


class IntegrityError(ValueError):
    """A dataset whose content is not the pinned one (changed, truncated or corrupt)."""


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_sha256(folder: str | Path) -> str:
    """One hash of a folder's ``*.json`` files: for each, in sorted order, its path relative
    to the folder and the sha256 of its bytes."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.json")):
        digest.update(f"{path.relative_to(folder).as_posix()}\0{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def fetch_file(path: str | Path, url: str | None, what: str, timeout: float = 60.0, sha256: str | None = None) -> Path:
    """``path`` if it exists, else ``url`` downloaded to ``path`` (atomically); with
    ``sha256``, either must have that hash."""
    path = Path(path)
    if path.is_file():
        _check(file_sha256(path), sha256, what, path, f"delete {path} to download it again from {url}")
        return path
    data = _download(url, path, what, timeout)
    actual = hashlib.sha256(data).hexdigest()
    _check(actual, sha256, what, url, "nothing was written; check that the URL names the pinned revision", len(data))
    with staged_file(path) as staging:
        staging.write_bytes(data)
    log.info("%s downloaded from %s to %s (%d bytes, sha256 %s)", what, url, path, len(data), actual)
    return path


def fetch_zip_folder(
    folder: str | Path, url: str | None, member: str, what: str, timeout: float = 120.0, sha256: str | None = None
) -> Path:
    """``folder`` if it exists, else the ``member`` folder of the zip archive at ``url``
    extracted to ``folder`` (through a staging folder, so no half copy is left); with
    ``sha256``, either must have that :func:`folder_sha256`."""
    folder = Path(folder)
    if folder.is_dir() and any(folder.iterdir()):
        _check(folder_sha256(folder), sha256, what, folder, f"delete {folder} to download it again from {url}")
        return folder
    data = _download(url, folder, what, timeout)
    prefix = member.strip("/") + "/"
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as error:
        raise IntegrityError(
            f"{what}: the download from {url} is not a readable zip archive ({error}; {len(data)} bytes, "
            f"truncated?): nothing was written; run again, or put a copy of the folder at {folder}"
        ) from None
    with staged_directory(folder) as staging, archive:
        names = [n for n in archive.namelist() if n.startswith(prefix) and not n.endswith("/")]
        if not names:
            raise DatasetUnavailableError(f"{what}: the archive at {url} has no folder {member!r}")
        for name in names:
            target = staging / name[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(name))
        _check(folder_sha256(staging), sha256, what, url, "nothing was written; check that the URL names the pinned commit")
    log.info("%s downloaded from %s to %s (%d files, folder sha256 %s)", what, url, folder, len(names), folder_sha256(folder))
    return folder


def _check(actual: str, expected: str | None, what: str, where: object, fix: str, size: int | None = None) -> None:
    if expected is None or actual == expected.lower():
        return
    got = f"sha256 {actual}" + (f" ({size} bytes)" if size is not None else "")
    raise IntegrityError(
        f"{what} at {where} has {got}, not the pinned {expected}: it was changed or truncated; {fix} "
        f"(or, to use this data as it is, set the sha256 parameter to null)"
    )


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
