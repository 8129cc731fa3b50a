"""A GGUF split into parts, joined into one GGUF file that transformers can read.

llama.cpp's ``gguf-split`` (and gguf-py's ``GGUFWriter(split_max_tensors=...)``) writes a
large model as ``<name>-00001-of-0000N.gguf`` ...: each part is a complete GGUF file with its
own header, metadata and tensor table, so the parts are **not** a byte concatenation. The
first part holds all the metadata (architecture, hyperparameters, tokenizer) plus the
``split.no``, ``split.count`` and ``split.tensors.count`` keys; the others hold those three
keys and their tensors only. Neither the ``gguf`` package (0.19: ``GGUFReader`` reads one
file) nor transformers (5.23: one ``gguf_file``) reads a split model: given the first part,
transformers loads it *without an error* (a warning lists the missing weights): its tensors
only, every other weight initialised at random, and the output embedding tied to the input
one when ``output.weight`` is in another part; given a later part, it stops (no
``general.architecture``).

:func:`join_split_gguf` therefore merges them as ``gguf-split --merge`` does: the first
part's metadata less the ``split.*`` keys, then every part's tensors in order, their bytes
copied unchanged (quantized blocks stay as they are), written to a staging file and renamed
into place. Before that, every part is checked: its size and sha256 against the parameters
(when given), that it reads as a GGUF file, and that the parts' split metadata agree (this
part is number i of n, n parts listed, every tensor present once). A record beside the joined
file (``<file>.parts.json``) lists each part's path, size, modification time and sha256: the
next run keeps the joined file without reading the parts again while they are unchanged on
disk and their recorded hashes match the parameters.
"""

from __future__ import annotations

import json
import logging
import mmap
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelSourceError
from .storage import file_sha256, staged_file

log = logging.getLogger(__name__)

RECORD_SUFFIX = ".parts.json"
SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS = "split.no", "split.count", "split.tensors.count"


@dataclass(frozen=True)
class Part:
    """One part as the parameters give it: ``key`` names it there (``base_model.files[1]``)."""

    key: str
    path: Path
    size: int | None = None
    sha256: str | None = None

    @property
    def listing(self) -> str:
        """The parameters' list holding it (``base_model.files``)."""
        return self.key.rpartition("[")[0]


def join_split_gguf(parts: Sequence[Part], target: str | Path) -> Path:
    """One GGUF file at ``target`` holding the model the parts hold (see the module
    docstring), or the file joined there before from the same, unchanged parts. A single
    part that is a whole model (no ``split.count`` above 1) is checked and returned as it is.
    Raises :class:`ModelSourceError` naming the part and the fix."""
    target = Path(target)
    parts = list(parts)
    for part in parts:
        _check_size(part)
    if len(parts) == 1 and _split_count(parts[0]) == 1:
        _check_hash(parts[0])
        return parts[0].path
    record = target.with_name(target.name + RECORD_SUFFIX)
    if _reusable(parts, target, record):
        log.info("GGUF in %d parts: %s joined before from the same parts; kept", len(parts), target)
        return target
    digests = [_check_hash(part) for part in parts]
    readers = [_read_part(part) for part in parts]
    _check_split(parts, readers)
    log.info("Joining the %d parts of %s into %s", len(parts), parts[0].path.name, target)
    record.unlink(missing_ok=True)  # from here on, no record describes what is at target
    with staged_file(target) as staging:
        _write_joined(readers, staging)
        tensors = _header(staging)[0]
        expected = sum(len(r.tensors) for r in readers)
        if tensors != expected:  # never renamed into place
            raise ModelSourceError(f"joining {parts[0].listing} wrote {tensors} tensors instead of {expected}")
    joined = target.stat()
    entry = {
        "parts": [{"path": str(p.path.resolve()), **_stat(p.path), "sha256": d} for p, d in zip(parts, digests)],
        "joined": {"path": str(target.resolve()), "size": joined.st_size, "mtime_ns": joined.st_mtime_ns},
    }
    with staged_file(record) as staging:
        staging.write_text(json.dumps(entry, indent=2) + "\n")
    log.info("Joined %d parts (%d tensors, %.1f MB) into %s", len(parts), expected, joined.st_size / 1e6, target)
    return target


def refuse_lone_part(path: Path, key: str) -> None:
    """Stop when a single GGUF file given as the model is one part of a split model (its
    metadata says ``split.count`` > 1, whatever its name): transformers would load that
    part's tensors and leave the rest random. A file that cannot be scanned is left to
    transformers' own error."""
    try:
        _, meta = _header(path)
    except (OSError, ValueError):
        return
    count = meta.get(SPLIT_COUNT, 1)
    if count > 1:
        raise ModelSourceError(
            f"{key} {path.name} is part {meta.get(SPLIT_NO, 0) + 1} of {count} of a GGUF split by gguf-split; "
            f"transformers would read that part's tensors alone. List every part, in order, under "
            f"{'base_model.files (with package)' if key.endswith('.file') else 'base_model.paths'}"
        )


# --- checks ---------------------------------------------------------------------------------


def _check_size(part: Part) -> None:
    size = part.path.stat().st_size
    if part.size is not None and size != part.size:
        raise ModelSourceError(
            f"{part.key} ({part.path}) is {size:,} bytes, but the parameters expect {part.size:,}: the part is "
            f"incomplete or another file; download it again (or correct {part.key}.size)"
        )


def _check_hash(part: Part) -> str:
    digest = file_sha256(part.path)
    if part.sha256 is not None and digest != part.sha256:
        raise ModelSourceError(
            f"{part.key} ({part.path}) has sha256 {digest}, but the parameters expect {part.sha256}: the part is "
            f"corrupt or another file; download it again (or correct {part.key}.sha256)"
        )
    return digest


def _split_count(part: Part) -> int:
    try:
        return int(_header(part.path)[1].get(SPLIT_COUNT, 1))
    except (OSError, ValueError) as error:
        raise ModelSourceError(
            f"{part.key} ({part.path}) is not a readable GGUF file ({error}): the file is corrupt or incomplete; "
            f"download it again"
        ) from None


def _stat(path: Path) -> dict[str, int]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _reusable(parts: list[Part], target: Path, record: Path) -> bool:
    """The joined file was made from these parts, which have not changed on disk since, and
    whose recorded sha256 are those the parameters expect."""
    try:
        entry = json.loads(record.read_text())
        recorded, joined = entry["parts"], entry["joined"]
        if not target.is_file() or _stat(target) != {"size": joined["size"], "mtime_ns": joined["mtime_ns"]}:
            return False
        if len(recorded) != len(parts):
            return False
        for part, seen in zip(parts, recorded):
            if seen["path"] != str(part.path.resolve()) or _stat(part.path) != {
                "size": seen["size"], "mtime_ns": seen["mtime_ns"]
            }:
                return False
            if part.sha256 is not None and part.sha256 != seen["sha256"]:
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def _read_part(part: Part) -> Any:
    import gguf

    try:
        reader = gguf.GGUFReader(part.path)
    except Exception as error:  # a cut or corrupt header, tensor table or data section
        raise ModelSourceError(
            f"{part.key} ({part.path}) is not a readable GGUF file ({type(error).__name__}: {error}): the part is "
            f"corrupt or incomplete; download it again"
        ) from None
    for tensor in reader.tensors:
        if tensor.data.nbytes != tensor.n_bytes:
            raise ModelSourceError(
                f"{part.key} ({part.path}) ends before its tensor {tensor.name}: the part is cut short; download it again"
            )
    return reader


def _field(reader: Any, key: str) -> Any:
    field = reader.get_field(key)
    return None if field is None else field.contents()


def _check_split(parts: list[Part], readers: list[Any]) -> None:
    """The parts' ``split.*`` metadata agree with the list: part i is number i of len(parts),
    and together they hold every tensor the first one announces."""
    n = len(parts)
    for part, reader in zip(parts, readers):
        if _field(reader, SPLIT_COUNT) is None or _field(reader, SPLIT_NO) is None:
            raise ModelSourceError(
                f"{part.key} ({part.path.name}) is not a part of a split GGUF (no {SPLIT_COUNT} in its metadata): "
                f"list the parts gguf-split wrote (<name>-00001-of-0000N.gguf ...), or give one whole GGUF file "
                f"as base_model.path (or package and file)"
            )
    for i, (part, reader) in enumerate(zip(parts, readers)):
        number, count = _field(reader, SPLIT_NO), _field(reader, SPLIT_COUNT)
        if count != n:
            raise ModelSourceError(
                f"{part.key} ({part.path.name}) is one of {count} parts, but {part.listing} lists {n}: list all "
                f"{count} parts of the model, in order"
            )
        if number != i:
            raise ModelSourceError(
                f"{part.key} ({part.path.name}) is part {number + 1} of {count}, not part {i + 1}: list the parts in "
                f"order (or replace it: another model's part)"
            )
    if _field(readers[0], "general.architecture") is None:
        raise ModelSourceError(f"{parts[0].key} ({parts[0].path.name}) has no general.architecture: it is not the first part")
    expected = _field(readers[0], SPLIT_TENSORS)
    names = [t.name for reader in readers for t in reader.tensors]
    if expected is not None and len(names) != expected:
        raise ModelSourceError(
            f"the {n} parts of {parts[0].listing} hold {len(names)} tensors, but the first says the model has "
            f"{expected}: a part belongs to another split of the model; download the parts again from one place"
        )
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ModelSourceError(f"{parts[0].listing}: tensors {twice[:3]} are in more than one part: list each part once")


# --- writing --------------------------------------------------------------------------------


def _write_joined(readers: list[Any], path: Path) -> None:
    """The first part's metadata (less the ``split.*`` keys) and every part's tensors, their
    bytes unchanged, as one GGUF file at ``path`` (gguf-split --merge does the same)."""
    import gguf

    first = readers[0]
    writer = gguf.GGUFWriter(path, str(_field(first, "general.architecture")), endianess=first.endianess)
    try:
        for field in first.fields.values():
            name = field.name
            if name.startswith(("GGUF.", "split.")) or name == gguf.Keys.General.ARCHITECTURE:
                continue  # the reader's own entries, the split's, and what the writer adds itself
            if name == gguf.Keys.General.ALIGNMENT:
                writer.add_custom_alignment(int(field.contents()))  # also where the writer aligns the data
                continue
            value_type = field.types[0]
            sub_type = field.types[-1] if value_type == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(name, field.contents(), value_type, sub_type=sub_type)
        for reader in readers:
            for tensor in reader.tensors:
                writer.add_tensor_info(
                    tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes, raw_dtype=tensor.tensor_type
                )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for reader in readers:
            for tensor in reader.tensors:
                writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    finally:
        writer.close()


# --- a header scan, without reading tensors or building the vocabulary ------------------------

_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


def _header(path: Path) -> tuple[int, dict[str, Any]]:
    """(tensor count, scalar and string metadata) of a GGUF file, arrays skipped: a fast
    scan (GGUFReader builds every tokenizer entry: seconds for a 50k vocabulary)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as blob:
        if blob[:4] != b"GGUF":
            raise ValueError(f"{path} does not start with the GGUF magic bytes")
        order = "<" if struct.unpack_from("<I", blob, 4)[0] & 0xFFFF else ">"
        try:
            tensors, count = struct.unpack_from(order + "QQ", blob, 8)
            pos, meta = 24, {}
            for _ in range(count):
                key, pos = _string(blob, pos, order)
                (value_type,) = struct.unpack_from(order + "I", blob, pos)
                meta[key], pos = _value(blob, pos + 4, value_type, order)
        except (struct.error, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: metadata unreadable ({error})") from None
    return tensors, {k: v for k, v in meta.items() if v is not _SKIPPED}


_SKIPPED = object()


def _string(blob: Any, pos: int, order: str) -> tuple[str, int]:
    (length,) = struct.unpack_from(order + "Q", blob, pos)
    end = pos + 8 + length
    if end > len(blob):
        raise struct.error("string past the end of the file")
    return bytes(blob[pos + 8 : end]).decode("utf-8"), end


def _value(blob: Any, pos: int, value_type: int, order: str) -> tuple[Any, int]:
    if value_type in _SCALARS:
        fmt = order + _SCALARS[value_type]
        return struct.unpack_from(fmt, blob, pos)[0], pos + struct.calcsize(fmt)
    if value_type == _STRING:
        return _string(blob, pos, order)
    if value_type == _ARRAY:
        element_type, count = struct.unpack_from(order + "IQ", blob, pos)
        pos += 12
        if element_type in _SCALARS:
            return _SKIPPED, pos + count * struct.calcsize(order + _SCALARS[element_type])
        for _ in range(count):
            _, pos = _value(blob, pos, element_type, order)
        return _SKIPPED, pos
    raise struct.error(f"unknown metadata value type {value_type}")
