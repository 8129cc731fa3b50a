"""Activation capture, once per model, reused by every analysis (probes, EntRec, CnstScore,
neuron attribution, drift).

One batched pass over the one-hop and the two-hop prompts records, with forward hooks
(so it works alike on full-precision, bitsandbytes and GPTQ/AWQ models: only module inputs
and outputs are read, never a quantized weight), the activations at three positions:

* ``subject``: the last token of the subject (one-hop prompts),
* ``mention``: the last token of the bridge's descriptive mention (two-hop prompts),
* ``last``: the last prompt token (both),

Token positions come from the tokenizer's ``offset_mapping`` (:func:`char_span_to_last_token`),
never from splitting on spaces, so a word-level tokenizer and a byte-level BPE with
leading-space tokens are handled alike. Batches are padded on the tokenizer's padding side;
the attention mask and explicit ``position_ids`` (``cumsum(mask) - 1``) make a padded row
compute what the unpadded prompt computes.

Stored tensors (``{set}`` is ``one_hop`` or ``two_hop``; rows follow the input table's row
order; ``L`` = number of decoder layers, ``d`` = hidden size, ``d_mlp`` = FFN width). All
activations are float16 (values beyond the float16 range are clamped and counted in the
metadata key ``fp16_clamped``):

============================== ================== ==============================================
key                            shape              what
============================== ================== ==============================================
``{set}.resid_post.{pos}``     [N, L+1, d]        residual stream at position ``pos``: index 0 is
                                                  the embedding output (``resid_pre`` of block 0),
                                                  index ``l`` (1..L) the output of decoder layer
                                                  ``l-1``, BEFORE the final norm (unlike HF's
                                                  ``hidden_states[-1]``, which is normed)
``{set}.attn_out.last``        [N, L, d]          output of block ``l``'s attention (after
                                                  ``o_proj``) at the last token (only the
                                                  ``mlp_act.rows`` with ``components="act_rows"``)
``{set}.mlp_out.last``         [N, L, d]          output of block ``l``'s MLP at the last token
``{set}.mlp_act.last``         [N_act, L, d_mlp]  input of ``mlp.down_proj`` (the FFN neuron
                                                  activations) at the last token, for the rows
                                                  ``{set}.mlp_act.rows`` only (a seeded subset:
                                                  ``CaptureConfig.max_act_prompts``)
``{set}.mlp_act.rows``         [N_act] int64      rows of the table that ``mlp_act`` holds
``{set}.token_id.{pos}``       [N] int64          the token id at each captured position
``{set}.answer_token``         [N] int64          first token of the answer (object / e3), as
                                                  the tokenizer splits ``prompt + " " + answer``
``{set}.answer_logprob``       [N] float32        log p(answer_token | prompt) at the last token
``two_hop.bridge_token``       [N] int64          first token of e2 (``prompt_two_hop + " " + e2``)
``two_hop.one_hop_answer_logprob`` [N] float32    log p(answer_token | prompt_one_hop)
``two_hop.xent_2h_1h``         [N] float32        H(p_2H, p_1H) = -sum p_2H log p_1H
``two_hop.xent_1h_2h``         [N] float32        H(p_1H, p_2H)
``two_hop.entropy_2h``         [N] float32        H(p_2H)
``two_hop.entropy_1h``         [N] float32        H(p_1H)
``two_hop.cnst_score``         [N] float32        -0.5 H(p_2H, p_1H) - 0.5 H(p_1H, p_2H)
============================== ================== ==============================================

CnstScore needs the whole next-token distributions of the two-hop prompt and of its one-hop
prompt. Full-vocabulary log-probs would cost 150k x 2 bytes x 2 prompts per chain (27 GB for
45k chains), so capture computes CnstScore (and its cross-entropy and entropy terms) in
float32 while both distributions are in memory, and stores five scalars per chain. Chains
are batched grouped by their one-hop prompt, so a one-hop prompt shared by many chains (the
same bridge reached from many e1) is run once per batch.

Everything lives in one :class:`ActivationCache` saved as ONE safetensors file (tensors plus
string metadata: model, layer convention, a hash of the prompts so caches of different
variants can be checked to line up row by row). No pickles.

At paper scale the per-row tensors do not fit in memory (28 layers x 3 positions x 3,584
dims x 91k prompts in float16 is ~55 GB), so with ``CaptureConfig.chunk_rows`` set the rows
are captured in chunks of that many (in table order; batched by length within a chunk) and
each chunk's per-row ``[N, ...]`` activations are written to their own safetensors shard as
soon as the chunk is done. The cache is then a directory (:meth:`ActivationCache.save`):
``cache.safetensors`` (metadata, the per-row scalars and token ids, ``mlp_act`` and the other
bounded tensors) and ``{set}.NNNNN.safetensors`` shards; reading it back is lazy:
``cache[key]`` reads one key (all shards), ``cache.layer(key, l)`` one layer of it, so
memory is bounded by a site (or a layer of a site), never the whole cache. Without
``chunk_rows`` (the default) nothing changes: one chunk, one file, the same numbers.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pydantic import ConfigDict, PositiveInt
from pydantic.dataclasses import dataclass as pydantic_dataclass
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..modeling.structure import (
    block_modules,
    decoder_layers,
    input_device,
    unwrap_model,
)
from .readouts import cnst_components

FP16_MAX = 65504.0
LAYER_CONVENTION = (
    "resid_post[:, 0] = embedding output (resid_pre of block 0); resid_post[:, l] = output of "
    "decoder layer l-1 before the final norm, l = 1..L; attn_out/mlp_out/mlp_act[:, l] = block l"
)

# ----------------------------------------------------------------------------------------
# Token positions from character spans
# ----------------------------------------------------------------------------------------


def char_span_to_last_token(offsets: Sequence[Sequence[int]], start: int, end: int) -> int:
    """Index of the last token whose characters overlap ``[start, end)`` (end exclusive).

    ``offsets`` is one sequence's ``offset_mapping`` (pairs ``(s, e)``). Special and padding
    tokens (empty spans such as ``(0, 0)``) never match. A byte-level BPE token with its
    leading space (``" Wonder"`` at ``(k-1, k+6)`` when offsets are not trimmed) overlaps the
    span by its word, and the next token (``" is"`` starting at ``end``) does not.
    """
    if not start < end:
        raise ValueError(f"empty character span [{start}, {end})")
    best = -1
    for i, (s, e) in enumerate(_as_pairs(offsets)):
        if e > s and s < end and e > start:
            best = i
    if best < 0:
        raise ValueError(f"no token overlaps characters [{start}, {end}); offsets: {_as_pairs(offsets)}")
    return best


def answer_first_tokens(tokenizer, prompts: Sequence[str], answers: Sequence[str]) -> list[int | None]:
    """First token of each answer as the tokenizer splits ``prompt + " " + answer`` (so a BPE
    tokenizer's leading-space token is chosen): the first (non-special) token that ends after
    the prompt, or None when no token does. The one home of this rule (captures, recall's
    alias check)."""
    _require_fast(tokenizer)
    prompts, answers = list(prompts), list(answers)
    texts = [f"{p} {a}" for p, a in zip(prompts, answers, strict=True)]
    enc = tokenizer(texts, return_offsets_mapping=True, add_special_tokens=True)
    return [
        next((ids[i] for i, (s, e) in enumerate(_as_pairs(offs)) if e > s and e > len(p)), None)
        for ids, offs, p in zip(enc["input_ids"], enc["offset_mapping"], prompts)
    ]


def answer_first_token_ids(tokenizer, prompts: Sequence[str], answers: Sequence[str]) -> torch.Tensor:
    """:func:`answer_first_tokens` as int64 ``[n]``; an answer with no token is an error."""
    firsts = answer_first_tokens(tokenizer, prompts, answers)
    missing = [i for i, t in enumerate(firsts) if t is None]
    if missing:
        i = missing[0]
        raise ValueError(f"no token of the answer {list(answers)[i]!r} follows the prompt {list(prompts)[i]!r}")
    return torch.tensor(firsts, dtype=torch.long)


def _as_pairs(offsets) -> list[tuple[int, int]]:
    if isinstance(offsets, torch.Tensor):
        offsets = offsets.tolist()
    return [(int(s), int(e)) for s, e in offsets]


def _require_fast(tokenizer) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("activation capture needs a fast tokenizer (offset_mapping); got a slow one")


# ----------------------------------------------------------------------------------------
# The cache
# ----------------------------------------------------------------------------------------


SHARDED_INDEX = "cache.safetensors"  # in a sharded cache's directory: metadata and bounded tensors


@dataclass
class ActivationCache:
    """Named tensors (see the module docstring for names and shapes) plus string metadata.

    In memory (``tensors``), or backed by a directory of shards (``directory``, see the module
    docstring): then ``sharded`` maps each per-row key to its shard files, in row order, and
    reading is lazy. ``cache[key]`` and ``cache.layer(key, l)`` work alike on both."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str] = field(default_factory=dict)
    directory: Path | None = None
    sharded: dict[str, list[str]] = field(default_factory=dict)

    def __getitem__(self, key: str) -> torch.Tensor:
        if key in self.tensors:
            return self.tensors[key]
        if key in self.sharded:
            return torch.cat([self._read(name, key) for name in self.sharded[key]])
        raise KeyError(f"{key!r} is not in the activation cache; it has {self.keys()}") from None

    def layer(self, key: str, layer: int) -> torch.Tensor:
        """``cache[key][:, layer]``, reading only that layer of a sharded key."""
        if key in self.sharded:
            return torch.cat([self._read(name, key, layer) for name in self.sharded[key]])
        return self[key][:, layer]

    def take(self, key: str, rows: torch.Tensor) -> torch.Tensor:
        """``cache[key][rows]``, reading a sharded key one shard at a time."""
        if key not in self.sharded:
            return self[key][rows]
        rows = torch.as_tensor(rows, dtype=torch.long)
        parts, found, start = [], [], 0
        for name in self.sharded[key]:
            part = self._read(name, key)
            inside = ((rows >= start) & (rows < start + len(part))).nonzero().flatten()
            if len(inside):
                parts.append(part[rows[inside] - start])
                found.append(inside)
            start += len(part)
        if not parts:
            return self._read(self.sharded[key][0], key)[:0]
        order = torch.empty(len(rows), dtype=torch.long)
        order[torch.cat(found)] = torch.arange(len(rows))
        return torch.cat(parts)[order]

    def shape(self, key: str) -> tuple[int, ...]:
        """The shape of ``cache[key]`` without reading a sharded key."""
        if key not in self.sharded:
            return tuple(self[key].shape)
        shapes = []
        for name in self.sharded[key]:
            with safe_open(str(self.directory / name), framework="pt") as f:
                shapes.append(tuple(f.get_slice(key).get_shape()))
        return (sum(s[0] for s in shapes), *shapes[0][1:])

    def _read(self, name: str, key: str, layer: int | None = None) -> torch.Tensor:
        with safe_open(str(self.directory / name), framework="pt") as f:
            if layer is None:
                return f.get_tensor(key)
            return f.get_slice(key)[:, layer : layer + 1][:, 0]

    def __contains__(self, key: str) -> bool:
        return key in self.tensors or key in self.sharded

    def keys(self) -> list[str]:
        return sorted({*self.tensors, *self.sharded})

    @property
    def n_layers(self) -> int:
        return int(self.metadata["n_layers"])

    def prompts_hash(self, prompt_set: str) -> str | None:
        return self.metadata.get(f"{prompt_set}.prompts_sha256")

    @property
    def is_sharded(self) -> bool:
        return self.directory is not None

    def save(self, path: str | Path) -> None:
        """An in-memory cache: every tensor and the metadata in ONE safetensors file at
        ``path``. A sharded cache: a directory at ``path`` (``cache.safetensors`` and the
        shards, moved there when they live in a capture's temporary folder, else copied)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self.is_sharded:
            save_file({k: v.contiguous() for k, v in self.tensors.items()}, str(path), metadata=dict(self.metadata))
            return
        path.mkdir(parents=True, exist_ok=True)
        move = self.metadata.get("spool") == "temporary"
        for name in sorted({n for names in self.sharded.values() for n in names}):
            (shutil.move if move else shutil.copyfile)(str(self.directory / name), str(path / name))
        metadata = {k: v for k, v in self.metadata.items() if k != "spool"}
        metadata["sharded"] = json.dumps(self.sharded)
        save_file({k: v.contiguous() for k, v in self.tensors.items()}, str(path / SHARDED_INDEX), metadata=metadata)
        if move:
            shutil.rmtree(self.directory, ignore_errors=True)
        self.directory, self.metadata = path, {k: v for k, v in metadata.items() if k != "sharded"}

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> ActivationCache:
        """A file: every tensor into memory. A directory: the bounded tensors into memory, the
        shards read lazily."""
        path = Path(path)
        if path.is_dir():
            index = path / SHARDED_INDEX
            with safe_open(str(index), framework="pt") as f:
                metadata = dict(f.metadata() or {})
            sharded = json.loads(metadata.pop("sharded", "{}"))
            return cls(tensors=load_file(str(index), device=device), metadata=metadata, directory=path, sharded=sharded)
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        return cls(tensors=load_file(str(path), device=device), metadata=metadata)


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class CaptureConfig:
    batch_size: PositiveInt = 64
    # Prompts per prompt set whose FFN activations (mlp_act) are kept: a seeded random subset
    # (same rows for every variant of a model), None for all. 18944 x 28 x 2 bytes = 1 MB a
    # prompt on a 7B model, hence the bound.
    max_act_prompts: int | None = 256
    seed: int = 0
    # "left", "right" or None (the tokenizer's own padding side).
    padding_side: str | None = None
    # "all": attn_out/mlp_out for every prompt; "act_rows": only for the mlp_act rows (what
    # attribution needs; saves 2 x N x L x d x 2 bytes, 18 GB for 45k prompts on a 7B model).
    components: str = "all"
    # Rows per chunk written to its own shard on disk as soon as it is captured (memory bounded
    # by a chunk); None: one chunk held in memory and saved as one file.
    chunk_rows: PositiveInt | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.padding_side not in (None, "left", "right"):
            raise ValueError(f"padding_side must be 'left', 'right' or None, got {self.padding_side!r}")
        if self.components not in ("all", "act_rows"):
            raise ValueError(f"components must be 'all' or 'act_rows', got {self.components!r}")
        if self.max_act_prompts is not None and self.max_act_prompts < 0:
            raise ValueError(f"max_act_prompts must be >= 0 or None, got {self.max_act_prompts}")


# ----------------------------------------------------------------------------------------
# Recording with forward hooks
# ----------------------------------------------------------------------------------------


def _first(out):
    return out[0] if isinstance(out, (tuple, list)) else out


class _Recorder:
    """Forward hooks that keep, for the current batch, the activations at the requested
    token positions (indexing inside the hook, so full-sequence tensors are never kept)."""

    def __init__(self, model, positions: Sequence[str]):
        self.model = unwrap_model(model)
        self.layers = decoder_layers(self.model)
        self.position_names = list(positions)
        self.active = False
        self.rows: torch.Tensor | None = None
        self.positions: dict[str, torch.Tensor] = {}
        self.act_keep: torch.Tensor | None = None
        self.store: dict[str, dict[int, torch.Tensor]] = {}
        self.handles: list = []

    def __enter__(self) -> _Recorder:
        emb = self.model.get_input_embeddings()
        self.handles.append(emb.register_forward_hook(lambda m, a, o: self._resid(0, _first(o))))
        for i, layer in enumerate(self.layers):
            attn, mlp, down = block_modules(layer)
            self.handles += [
                layer.register_forward_hook(lambda m, a, o, i=i: self._resid(i + 1, _first(o))),
                attn.register_forward_hook(lambda m, a, o, i=i: self._last("attn_out.last", i, _first(o))),
                mlp.register_forward_hook(lambda m, a, o, i=i: self._last("mlp_out.last", i, _first(o))),
                down.register_forward_pre_hook(lambda m, a, i=i: self._act(i, a[0])),
            ]
        return self

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def start(self, positions: dict[str, torch.Tensor], act_keep: torch.Tensor | None) -> None:
        self.active = True
        self.positions = positions
        self.rows = torch.arange(len(positions["last"]), device=positions["last"].device)
        self.act_keep = act_keep
        self.store = {}

    def stop(self) -> dict[str, torch.Tensor]:
        """Stacked per-layer tensors of the batch: [B, n_layers(+1), width]."""
        self.active = False
        return {k: torch.stack([v[i] for i in sorted(v)], dim=1) for k, v in self.store.items()}

    def _put(self, key: str, layer: int, value: torch.Tensor) -> None:
        self.store.setdefault(key, {})[layer] = value.detach()

    def _resid(self, layer: int, h: torch.Tensor) -> None:
        if self.active:
            for name, pos in self.positions.items():
                self._put(f"resid_post.{name}", layer, h[self.rows, pos])

    def _last(self, key: str, layer: int, h: torch.Tensor) -> None:
        if self.active:
            self._put(key, layer, h[self.rows, self.positions["last"]])

    def _act(self, layer: int, x: torch.Tensor) -> None:
        if self.active and self.act_keep is not None and len(self.act_keep):
            keep = self.act_keep
            self._put("mlp_act.last", layer, x[keep, self.positions["last"][keep]])


# ----------------------------------------------------------------------------------------
# Capture
# ----------------------------------------------------------------------------------------


@dataclass
class _Tokenized:
    ids: list[list[int]]
    offsets: list[list[tuple[int, int]]]


def _tokenize(tokenizer, texts: Sequence[str]) -> _Tokenized:
    _require_fast(tokenizer)
    enc = tokenizer(list(texts), return_offsets_mapping=True, add_special_tokens=True)
    return _Tokenized(ids=enc["input_ids"], offsets=[_as_pairs(o) for o in enc["offset_mapping"]])


def _pad_batch(ids: Sequence[Sequence[int]], pad_id: int, side: str, device) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Padded ``input_ids``, ``attention_mask`` and ``position_ids`` (``cumsum(mask) - 1``), and
    each row's shift (pad tokens before the prompt: 0 for right padding)."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    shift = torch.zeros(len(ids), dtype=torch.long)
    for r, row in enumerate(ids):
        s = width - len(row) if side == "left" else 0
        input_ids[r, s : s + len(row)] = torch.tensor(row, dtype=torch.long)
        mask[r, s : s + len(row)] = 1
        shift[r] = s
    position_ids = (mask.cumsum(1) - 1).clamp(min=0)
    batch = {"input_ids": input_ids, "attention_mask": mask, "position_ids": position_ids}
    return {k: v.to(device) for k, v in batch.items()}, shift


def _last_logprobs(model, batch: dict[str, torch.Tensor], last: torch.Tensor) -> torch.Tensor:
    """float32 log-softmax of the next-token logits at each row's last prompt token, computing
    logits only at the needed positions (``logits_to_keep``)."""
    width = batch["input_ids"].shape[1]
    if bool((last == width - 1).all()):
        keep: int | torch.Tensor = 1
        pick = torch.zeros_like(last)
    else:
        uniq = torch.unique(last)
        keep, pick = uniq, torch.searchsorted(uniq, last)
    logits = model(**batch, logits_to_keep=keep, use_cache=False).logits
    logits = logits[torch.arange(len(last), device=logits.device), pick.to(logits.device)]
    return torch.log_softmax(logits.float(), dim=-1)


class _Fp16Sink:
    """Preallocated CPU float16 outputs; counts values clamped to the float16 range."""

    def __init__(self):
        self.out: dict[str, torch.Tensor] = {}
        self.clamped = 0

    def write(self, key: str, rows: torch.Tensor, value: torch.Tensor, n_total: int) -> None:
        value = value.detach().float().cpu()
        over = value.abs() > FP16_MAX
        if bool(over.any()):
            self.clamped += int(over.sum())
            value = value.clamp(-FP16_MAX, FP16_MAX)
        if key not in self.out:
            self.out[key] = torch.zeros((n_total, *value.shape[1:]), dtype=torch.float16)
        self.out[key][rows] = value.half()


def _act_rows(n: int, max_act_prompts: int | None, seed: int) -> torch.Tensor:
    if max_act_prompts is None or max_act_prompts >= n:
        return torch.arange(n, dtype=torch.long)
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.sort(rng.choice(n, size=max_act_prompts, replace=False))).long()


def prompts_sha256(prompts: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(prompts)).encode()).hexdigest()


@torch.inference_mode()
def capture_prompt_set(
    model,
    tokenizer,
    prompts: Sequence[str],
    spans: Mapping[str, tuple[Sequence[int], Sequence[int]]] | None = None,
    *,
    prefix: str,
    answers: Sequence[str] | None = None,
    bridges: Sequence[str] | None = None,
    paired_prompts: Sequence[str] | None = None,
    config: CaptureConfig = CaptureConfig(),
    spool: Path | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, str], dict[str, list[str]]]:
    """Capture one prompt set; return ``({prefix}.key: tensor}, metadata, sharded)``.

    ``spans`` maps a position name (``"subject"``, ``"mention"``) to the (start, end)
    character offsets of a span in each prompt; the last prompt token (``"last"``) is always
    captured. ``answers`` gives ``answer_token``/``answer_logprob``; ``bridges`` gives
    ``bridge_token``; ``paired_prompts`` (the matching one-hop prompts) gives CnstScore.
    With ``config.chunk_rows`` and a ``spool`` folder the per-row activations of each chunk
    are written to ``spool/{prefix}.NNNNN.safetensors`` and ``sharded`` maps each such key to
    its shard files (the returned tensors then hold only the bounded ones).
    """
    model = unwrap_model(model)
    prompts = list(prompts)
    n = len(prompts)
    if n == 0:
        raise ValueError(f"no {prefix} prompts to capture")
    if config.chunk_rows is not None and spool is None:
        raise ValueError("chunk_rows needs a spool folder to write the chunks to")
    spans = dict(spans or {})
    if "last" in spans:
        raise ValueError("'last' is captured always; do not pass it as a span")
    side = config.padding_side or getattr(tokenizer, "padding_side", "left") or "left"
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has neither a pad nor an EOS token to pad with")
    device = input_device(model)

    tok = _tokenize(tokenizer, prompts)
    span_pos = {
        name: [char_span_to_last_token(tok.offsets[i], int(s), int(e)) for i, (s, e) in enumerate(zip(*se, strict=True))]
        for name, se in spans.items()
    }
    answer_tok = answer_first_token_ids(tokenizer, prompts, answers) if answers is not None else None
    bridge_tok = answer_first_token_ids(tokenizer, prompts, bridges) if bridges is not None else None

    paired_tok: dict[str, list[int]] = {}
    if paired_prompts is not None:
        paired_prompts = list(paired_prompts)
        uniq = list(dict.fromkeys(paired_prompts))
        paired_tok = dict(zip(uniq, _tokenize(tokenizer, uniq).ids))

        def sort_key(i: int):
            return (paired_prompts[i], -len(tok.ids[i]))
    else:
        def sort_key(i: int):
            return -len(tok.ids[i])

    act_rows = _act_rows(n, config.max_act_prompts, config.seed)
    act_slot = torch.full((n,), -1, dtype=torch.long)
    act_slot[act_rows] = torch.arange(len(act_rows))

    # Per-row activations go to the chunk's sink (saved as a shard when the chunk is done, or
    # kept when there is one chunk); the act-row tensors (bounded) to ``bounded``.
    bounded = _Fp16Sink()
    clamped = 0
    sharded: dict[str, list[str]] = {}
    scalars: dict[str, torch.Tensor] = {}
    token_ids = {name: torch.empty(n, dtype=torch.long) for name in [*spans, "last"]}
    if answer_tok is not None:
        scalars["answer_logprob"] = torch.empty(n)
        if paired_prompts is not None:
            scalars["one_hop_answer_logprob"] = torch.empty(n)
    if paired_prompts is not None:
        for k in ("xent_2h_1h", "xent_1h_2h", "entropy_2h", "entropy_1h", "cnst_score"):
            scalars[k] = torch.empty(n)

    chunk = config.chunk_rows or n
    bar = tqdm(total=n, desc=f"capture {prefix}", unit="prompt", disable=not config.progress, mininterval=1.0)
    with _Recorder(model, [*spans, "last"]) as rec:
        for c, c0 in enumerate(range(0, n, chunk)):
            c1 = min(c0 + chunk, n)
            sink = _Fp16Sink()
            order = sorted(range(c0, c1), key=sort_key)
            for b0 in range(0, len(order), config.batch_size):
                rows = order[b0 : b0 + config.batch_size]
                idx = torch.tensor(rows, dtype=torch.long)
                batch, shift = _pad_batch([tok.ids[i] for i in rows], pad_id, side, device)
                last = shift + torch.tensor([len(tok.ids[i]) for i in rows]) - 1
                positions = {name: shift + torch.tensor([span_pos[name][i] for i in rows]) for name in spans}
                positions["last"] = last
                for name, pos in positions.items():
                    token_ids[name][idx] = batch["input_ids"].cpu()[torch.arange(len(idx)), pos]
                keep = (act_slot[idx] >= 0).nonzero().flatten()

                rec.start({k: v.to(device) for k, v in positions.items()}, keep.to(device))
                logp = _last_logprobs(model, batch, last.to(device))
                captured = rec.stop()
                for key, value in captured.items():
                    if key == "mlp_act.last":
                        bounded.write(f"{prefix}.{key}", act_slot[idx[keep]], value, len(act_rows))
                    elif key in ("attn_out.last", "mlp_out.last") and config.components == "act_rows":
                        if len(keep):
                            bounded.write(f"{prefix}.{key}", act_slot[idx[keep]], value[keep.to(value.device)], len(act_rows))
                    else:
                        sink.write(f"{prefix}.{key}", idx - c0, value, c1 - c0)

                if answer_tok is not None:
                    a = answer_tok[idx].to(logp.device)
                    scalars["answer_logprob"][idx] = logp.gather(1, a[:, None])[:, 0].cpu()
                if paired_prompts is not None:
                    uniq = list(dict.fromkeys(paired_prompts[i] for i in rows))
                    pbatch, pshift = _pad_batch([paired_tok[p] for p in uniq], pad_id, side, device)
                    plast = pshift + torch.tensor([len(paired_tok[p]) for p in uniq]) - 1
                    plogp = _last_logprobs(model, pbatch, plast.to(device))
                    where = {p: j for j, p in enumerate(uniq)}
                    plogp = plogp[torch.tensor([where[paired_prompts[i]] for i in rows], device=plogp.device)]
                    for k, v in cnst_components(logp, plogp).items():
                        scalars[k][idx] = v.cpu()
                    if answer_tok is not None:
                        scalars["one_hop_answer_logprob"][idx] = plogp.gather(1, a[:, None])[:, 0].cpu()
                bar.update(len(idx))
            clamped += sink.clamped
            if config.chunk_rows is None:
                bounded.out.update(sink.out)
            else:
                name = f"{prefix}.{c:05d}.safetensors"
                save_file({k: v.contiguous() for k, v in sink.out.items()}, str(Path(spool) / name))
                for key in sink.out:
                    sharded.setdefault(key, []).append(name)
            del sink
    bar.close()

    tensors = dict(bounded.out)
    tensors[f"{prefix}.mlp_act.rows"] = act_rows
    for name, t in token_ids.items():
        tensors[f"{prefix}.token_id.{name}"] = t
    for k, v in scalars.items():
        tensors[f"{prefix}.{k}"] = v.float()
    if answer_tok is not None:
        tensors[f"{prefix}.answer_token"] = answer_tok
    if bridge_tok is not None:
        tensors[f"{prefix}.bridge_token"] = bridge_tok
    meta = {
        f"{prefix}.n_prompts": str(n),
        f"{prefix}.prompts_sha256": prompts_sha256(prompts),
        f"{prefix}.positions": ",".join([*spans, "last"]),
        f"{prefix}.padding_side": side,
        f"{prefix}.fp16_clamped": str(clamped + bounded.clamped),
        f"{prefix}.components_rows": config.components,
    }
    if config.chunk_rows is not None:
        meta[f"{prefix}.chunk_rows"] = str(config.chunk_rows)
    return tensors, meta, sharded


def capture_activations(
    model,
    tokenizer,
    one_hop: pd.DataFrame | None = None,
    two_hop: pd.DataFrame | None = None,
    config: CaptureConfig = CaptureConfig(),
    model_name: str = "",
    spool_dir: str | Path | None = None,
) -> ActivationCache:
    """Capture everything the analyses need from one model, for a one-hop table (``prompt``,
    ``subject_start/_end``, ``object``) and/or a two-hop table (``prompt_two_hop``,
    ``mention_start/_end``, ``e2``, ``e3``, ``prompt_one_hop``). Rows keep the tables' order.

    With ``config.chunk_rows`` the per-row activations are written in chunks to ``spool_dir``
    (default: a new temporary folder, moved into place when the cache is saved) and the
    returned cache reads them lazily."""
    if one_hop is None and two_hop is None:
        raise ValueError("give a one-hop table, a two-hop table or both")
    spool = None
    if config.chunk_rows is not None:
        spool = Path(spool_dir) if spool_dir is not None else Path(tempfile.mkdtemp(prefix="fkr_activations_"))
        spool.mkdir(parents=True, exist_ok=True)
    sharded: dict[str, list[str]] = {}
    model = unwrap_model(model)
    model.eval()
    tensors: dict[str, torch.Tensor] = {}
    cfg = model.config
    n_layers = len(decoder_layers(model))
    metadata = {
        "format": "fkr_kedro.activation_cache/1",
        "model": model_name or str(getattr(cfg, "name_or_path", "") or type(model).__name__),
        "model_class": type(model).__name__,
        "n_layers": str(n_layers),
        "d_model": str(getattr(cfg, "hidden_size", "")),
        "d_mlp": str(getattr(cfg, "intermediate_size", "")),
        "vocab_size": str(getattr(cfg, "vocab_size", "")),
        "layer_convention": LAYER_CONVENTION,
        "dtype": "float16",
    }
    if one_hop is not None:
        t, m, sh = capture_prompt_set(
            model, tokenizer, one_hop["prompt"].tolist(),
            {"subject": (one_hop["subject_start"].tolist(), one_hop["subject_end"].tolist())},
            prefix="one_hop", answers=one_hop["object"].astype(str).tolist(), config=config, spool=spool,
        )
        tensors.update(t)
        sharded.update(sh)
        metadata.update(m)
    if two_hop is not None:
        t, m, sh = capture_prompt_set(
            model, tokenizer, two_hop["prompt_two_hop"].tolist(),
            {"mention": (two_hop["mention_start"].tolist(), two_hop["mention_end"].tolist())},
            prefix="two_hop", answers=two_hop["e3"].astype(str).tolist(),
            bridges=two_hop["e2"].astype(str).tolist(),
            paired_prompts=two_hop["prompt_one_hop"].tolist(), config=config, spool=spool,
        )
        tensors.update(t)
        sharded.update(sh)
        metadata.update(m)
    metadata["fp16_clamped"] = str(sum(int(metadata.get(f"{p}.fp16_clamped", 0)) for p in ("one_hop", "two_hop")))
    if spool is None:
        return ActivationCache(tensors=tensors, metadata=metadata)
    if spool_dir is None:
        metadata["spool"] = "temporary"  # save() moves the shards out of it
    return ActivationCache(tensors=tensors, metadata=metadata, directory=spool, sharded=sharded)


def check_aligned(reference: ActivationCache, other: ActivationCache, prompt_set: str) -> None:
    """Raise unless two caches hold the same prompts in the same order."""
    a, b = reference.prompts_hash(prompt_set), other.prompts_hash(prompt_set)
    if a is not None and b is not None and a != b:
        raise ValueError(
            f"the {prompt_set} prompts of the two activation caches differ "
            f"({reference.metadata.get('model')} vs {other.metadata.get('model')}): capture both from the same table"
        )
