"""Downloads checked against a pinned hash, offline: a local HTTP server and file:// URLs
serve the data; a changed or truncated file is an error naming the file and the fix, and
nothing is written."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import threading
import zipfile
from pathlib import Path

import pytest

from fkr_kedro.knowledge.download import IntegrityError, fetch_file, fetch_zip_folder, folder_sha256
from fkr_kedro.parameters import LRE_COMMIT, LRE_SHA256, LreSettings

CSV = b"e1,e2,e3\nFrance,Paris,Seine\n" * 50


@pytest.fixture
def server(tmp_path):
    """A local HTTP server over tmp_path/served; yields its base URL."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


def test_a_file_with_its_pinned_hash_downloads(server, tmp_path):
    url, root = server
    (root / "TwoHopFact.csv").write_bytes(CSV)
    target = tmp_path / "raw" / "TwoHopFact.csv"
    pinned = hashlib.sha256(CSV).hexdigest()
    assert fetch_file(target, f"{url}/TwoHopFact.csv", "TwoHopFact CSV", sha256=pinned).read_bytes() == CSV
    # On disk and intact: used as it is (the server is not asked again).
    (root / "TwoHopFact.csv").unlink()
    assert fetch_file(target, f"{url}/TwoHopFact.csv", "TwoHopFact CSV", sha256=pinned) == target


@pytest.mark.parametrize("served", [CSV.replace(b"Seine", b"Loire"), CSV[:-17]], ids=["changed", "truncated"])
def test_a_changed_or_truncated_download_is_an_error_and_nothing_is_written(server, tmp_path, served):
    url, root = server
    (root / "TwoHopFact.csv").write_bytes(served)
    target = tmp_path / "raw" / "TwoHopFact.csv"
    pinned = hashlib.sha256(CSV).hexdigest()
    with pytest.raises(IntegrityError) as error:
        fetch_file(target, f"{url}/TwoHopFact.csv", "TwoHopFact CSV", sha256=pinned)
    message = str(error.value)
    assert f"TwoHopFact CSV at {url}/TwoHopFact.csv has sha256 {hashlib.sha256(served).hexdigest()} ({len(served)} bytes)" in message
    assert f"not the pinned {pinned}" in message and "nothing was written" in message
    assert "set the sha256 parameter to null" in message
    assert not target.parent.exists() or list(target.parent.iterdir()) == []


def test_a_local_copy_that_changed_is_an_error_naming_it(tmp_path):
    target = tmp_path / "TwoHopFact.csv"
    target.write_bytes(CSV[:-1])
    with pytest.raises(IntegrityError, match=rf"TwoHopFact CSV at {target} has sha256 .* delete {target} to download it again"):
        fetch_file(target, "http://127.0.0.1:9/x.csv", "TwoHopFact CSV", sha256=hashlib.sha256(CSV).hexdigest())
    # Unpinned: used as it is, as before.
    assert fetch_file(target, None, "TwoHopFact CSV") == target


def _archive(relations: dict[str, dict]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr(f"relations-{LRE_COMMIT}/README.md", "not data")
        for name, content in relations.items():
            z.writestr(f"relations-{LRE_COMMIT}/data/{name}", json.dumps(content))
    return buffer.getvalue()


RELATIONS = {"factual/capital.json": {"name": "capital", "samples": [{"subject": "France", "object": "Paris"}]}}


def test_lre_archive_is_checked_by_its_relations_hash(server, tmp_path):
    url, root = server
    (root / "lre.zip").write_bytes(_archive(RELATIONS))
    member = f"relations-{LRE_COMMIT}/data"
    reference = tmp_path / "reference"
    (reference / "factual").mkdir(parents=True)
    (reference / "factual" / "capital.json").write_text(json.dumps(RELATIONS["factual/capital.json"]))
    pinned = folder_sha256(reference)
    folder = fetch_zip_folder(tmp_path / "lre", f"{url}/lre.zip", member, "LRE relations", sha256=pinned)
    assert folder_sha256(folder) == pinned
    # A relation changed upstream: an error, and no folder.
    changed = {"factual/capital.json": {**RELATIONS["factual/capital.json"], "samples": []}}
    (root / "lre.zip").write_bytes(_archive(changed))
    with pytest.raises(IntegrityError, match=rf"LRE relations at {url}/lre.zip has sha256 .*not the pinned {pinned}"):
        fetch_zip_folder(tmp_path / "lre2", f"{url}/lre.zip", member, "LRE relations", sha256=pinned)
    assert not (tmp_path / "lre2").exists()
    # A truncated archive: the error says so; nothing written.
    (root / "lre.zip").write_bytes(_archive(RELATIONS)[:-40])
    with pytest.raises(IntegrityError, match=r"not a readable zip archive .*truncated\?\): nothing was written"):
        fetch_zip_folder(tmp_path / "lre3", f"{url}/lre.zip", member, "LRE relations", sha256=pinned)
    assert not (tmp_path / "lre3").exists()


def test_the_pinned_lre_is_the_commit_and_hash_of_the_local_copy():
    settings = LreSettings()
    assert LRE_COMMIT in settings.url and settings.archive_folder == f"relations-{LRE_COMMIT}/data"
    assert settings.sha256 == LRE_SHA256
    local = Path(__file__).resolve().parents[1] / settings.path
    if not local.is_dir():
        pytest.skip(f"no LRE copy at {local}")
    assert folder_sha256(local) == LRE_SHA256
