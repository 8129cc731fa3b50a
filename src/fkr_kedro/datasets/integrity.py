"""The check every model dataset makes before a model directory is used: its files match the
manifest written with them (``modeling.storage.verify_weights``). A mismatch is one
:class:`~kedro.io.DatasetError` naming the model and the command that rebuilds it.

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
    what, rebuild, variant = describe(path)
    try:
        verify_weights(path)
    except ManifestMissingError as error:
        if variant:
            raise DatasetError(f"{what} at {path}: {error}; rebuild it with {rebuild}") from None
        if path.resolve() not in _WARNED:  # once per directory and process (stages load it again)
            _WARNED.add(path.resolve())
            log.warning("%s at %s is loaded unverified: %s; rebuild it with %s to record one", what, path, error, rebuild)
    except WeightsError as error:
        raise DatasetError(f"{what} at {path}: {error}; rebuild it with {rebuild}") from None


def weights_problem(path: Path) -> str | None:
    """Why ``path``'s files cannot be trusted (no manifest, or a mismatch), or None."""
    try:
        verify_weights(path)
    except WeightsError as error:
        return str(error)
    return None
