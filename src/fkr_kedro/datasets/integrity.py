"""The checks every dataset of stored artifacts makes before a later stage uses them: a model
directory's files match the manifest written with them (``modeling.storage.verify_weights``),
and a table or activation cache matches ``<file>.manifest.json`` (the second half of this
module). A mismatch is one :class:`~kedro.io.DatasetError` naming the model or file and the
command that rebuilds it.

Directories without a manifest (written before manifests were recorded):

* a quantized variant is refused on load and rebuilt by the quantize step's keep-check
  (``kedro run --namespaces=<variant>`` or ``kedro run --pipeline=quantize``);
* a base model (trained, dequantized or linked) is loaded with a warning that it is
  unverified: retraining takes minutes to hours, and a linked model's files are not ours
  to record (files that link into the Hugging Face cache are checked against their blob
  names, which are their sha256).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from kedro.io import DatasetError

from ..modeling.storage import ManifestMissingError, WeightsError, verify_weights
from ..quantization.api import VARIANT_FILE

log = logging.getLogger(__name__)

SOURCE_FILE = "model_source.json"  # written by ModelSourceDataset for a dequantized GGUF
_WARNED: set[Path] = set()


def describe(path: Path) -> tuple[str, str, bool]:
    """(what the directory is, the command that rebuilds it, whether it is a variant). The
    commands carry the study's ``--env`` and ``--params`` (``run_config.kedro_command``)."""
    from ..run_config import kedro_command

    path = Path(path)
    record = path / VARIANT_FILE
    if record.is_file() or path.parent.name == "variants":
        name = path.name
        try:
            name = json.loads(record.read_text()).get("name", name)
        except (OSError, ValueError, AttributeError):
            pass
        return (
            f"variant {name!r}",
            f"`{kedro_command(f'--namespaces={name}')}` (or the whole quantize pipeline: "
            f"`{kedro_command('--pipeline=quantize')}`)",
            True,
        )
    if path.is_symlink():
        return (
            f"base model (a link to {path.resolve()})",
            "restoring the files it links to (for a hub model: `hf download <id> --revision <revision> "
            f"--force-download`), then `{kedro_command('--pipeline=train')}` to link it again",
            False,
        )
    if (path / SOURCE_FILE).is_file():
        return (
            "base model (a dequantized GGUF)",
            f"`{kedro_command('--pipeline=train')}` (it dequantizes the GGUF again)",
            False,
        )
    return "model", f"`{kedro_command('--pipeline=train')}`", False


def check_model_directory(path: Path) -> None:
    """Raise a DatasetError when ``path``'s files do not match its manifest (or, for a
    variant, when it has none); warn when a base model has none."""
    try:
        verify_weights(path)
    except ManifestMissingError as error:
        what, rebuild, variant = describe(path)  # only on failure: it builds the study's command line
        if variant:
            raise DatasetError(f"{what} at {path}: {error}; rebuild it with {rebuild}") from None
        if path.resolve() not in _WARNED:  # once per directory and process (stages load it again)
            _WARNED.add(path.resolve())
            log.warning("%s at %s is loaded unverified: %s; rebuild it with %s to record one", what, path, error, rebuild)
    except WeightsError as error:
        what, rebuild, _ = describe(path)
        raise DatasetError(f"{what} at {path}: {error}; rebuild it with {rebuild}") from None


def save_made_model(made, target: Path, record_file: str, what: str) -> None:
    """Save what a node made (``made.kept``, ``made.path``): a kept model stays where it is
    (it must be the one at ``target``); a new one, in a staging folder, is checked (its
    ``record_file`` and its weights against their manifest) and then moved into place, so a
    good model is never replaced by a bad one."""
    import shutil

    from ..modeling.storage import replace_with_staging

    if made.kept:
        if Path(made.path).resolve() != Path(target).resolve():
            raise DatasetError(f"{target}: the kept {what} is at {made.path}, not here")
        return
    problem = None if (made.path / record_file).is_file() else f"no {record_file}"
    problem = problem or weights_problem(made.path)
    if problem is not None:
        shutil.rmtree(made.path, ignore_errors=True)
        raise DatasetError(f"the new {what} for {target} in {made.path} is not saved: {problem}")
    replace_with_staging(made.path, target, manifest=False)


def weights_problem(path: Path) -> str | None:
    """Why ``path``'s files cannot be trusted (no manifest, or a mismatch), or None."""
    try:
        verify_weights(path)
    except WeightsError as error:
        return str(error)
    return None


# --- stored tables and activation caches ----------------------------------------------------
#
# A file a later stage reads (a prompt or score table, an activation cache) gets a manifest
# beside it when written, ``<file>.manifest.json``: size and sha256 of its file(s) (a sharded
# cache: every file of its folder) and what it holds (rows and column dtypes of a table, tensor
# names, dtypes and shapes of a safetensors file), so a mismatch can say what changed. Loading
# checks it first: a mismatch is one DatasetError naming the file and the command that
# rebuilds it (run_config.kedro_command: the study's --env and --params).
#
# A file without a manifest (written before manifests were recorded) is checked as far as its
# content allows (its table's schema, a cache that loads), then its manifest is recorded with
# a warning (once per file and process): rebuilding every table and cache of an existing study
# for it would cost more than it protects, and from then on the file is verified.

ARTIFACT_MANIFEST_SUFFIX = ".manifest.json"


class ArtifactError(DatasetError):
    """A stored table or cache that does not match its manifest."""


def artifact_manifest_path(path: Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ARTIFACT_MANIFEST_SUFFIX)


def _artifact_files(path: Path) -> dict[str, Path]:
    """The files of an artifact by their name relative to its folder: the file itself, or
    every file under a directory (a sharded cache)."""
    if path.is_dir():
        return {str(p.relative_to(path.parent)): p for p in sorted(path.rglob("*")) if p.is_file()}
    return {path.name: path}


def rebuild_command(arguments: str) -> str:
    """``kedro run <arguments>`` for the running study (its --env and --params)."""
    import shlex

    from ..run_config import kedro_command

    return kedro_command(*shlex.split(arguments))


def write_artifact_manifest(path: Path, content: dict) -> dict:
    """Record the files of ``path`` (size, sha256) and ``content`` beside it, atomically."""
    from ..modeling.storage import file_sha256, staged_file

    path = Path(path)
    files = {name: {"size": p.stat().st_size, "sha256": file_sha256(p)} for name, p in _artifact_files(path).items()}
    manifest = {"format": 1, "files": files, "content": content}
    with staged_file(artifact_manifest_path(path)) as staging:
        staging.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    return manifest


def remove_artifact_manifest(path: Path) -> None:
    """Before a file is replaced: a run killed between the two writes leaves a file without a
    manifest (recorded on its next load), never one with the previous file's manifest."""
    artifact_manifest_path(path).unlink(missing_ok=True)


def check_artifact(path: Path, what: str, rebuild: str, content_of=None) -> dict | None:
    """Check ``path`` against its manifest; return the manifest, or None when it has none
    (the caller checks the content, then records one with :func:`adopt_artifact`).
    ``content_of(path)`` describes the file as it is now, to say what changed."""
    from ..modeling.storage import recorded_files_problem

    path = Path(path)
    manifest_path = artifact_manifest_path(path)
    if not manifest_path.is_file():
        return None

    def fail(problem: str):
        return ArtifactError(f"{what} {path}: {problem}; rebuild it with `{rebuild_command(rebuild)}`")

    try:
        manifest = json.loads(manifest_path.read_text())
        recorded = manifest["files"]
        if not all(isinstance(v["size"], int) and isinstance(v["sha256"], str) for v in recorded.values()):
            raise ValueError("entries without size and sha256")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise fail(f"its manifest {manifest_path.name} is unreadable ({error})") from None
    present = _artifact_files(path)
    added = sorted(set(present) - set(recorded))
    if added:
        raise fail(f"file(s) {', '.join(added)} were added after it was written (not in {manifest_path.name})")
    problem = recorded_files_problem(path.parent, recorded, manifest_path.name)
    if problem is not None:
        kind, message = problem
        raise fail(message + ("" if kind == "missing" else _changes(manifest, path, content_of)))
    return manifest


def _changes(manifest: dict, path: Path, content_of) -> str:
    """``: rows 100 -> 50; ...`` where the content as it is now can be read and differs."""
    if content_of is None or "content" not in manifest:
        return ""
    try:
        now = content_of(path)
    except Exception as error:  # noqa: BLE001 - a damaged file may fail in any way; say it is unreadable
        return f"; it no longer reads ({type(error).__name__})"
    from ..quantization.api import fingerprint_changes

    changes = fingerprint_changes(manifest["content"], now)
    return f"; {'; '.join(changes[:5])}" if changes else "; same size and content shape, other bytes"


def adopt_artifact(path: Path, what: str, content: dict) -> None:
    """Record the manifest of a file written before manifests were (its content already
    checked by the caller), with a warning once per file and process."""
    path = Path(path)
    write_artifact_manifest(path, content)
    if path.resolve() not in _WARNED:
        _WARNED.add(path.resolve())
        log.warning(
            "%s %s had no manifest (written before manifests were recorded); its content passed its checks, "
            "so its manifest is recorded now (%s)", what, path, artifact_manifest_path(path).name,
        )
