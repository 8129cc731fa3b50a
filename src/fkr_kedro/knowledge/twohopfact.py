"""Reader for TwoHopFact (Yang et al. 2024, "Do LLMs Latently Perform Multi-Hop Reasoning?").

TwoHopFact is a CSV with one chain ``e1 -r1-> e2 -r2-> e3`` per row. The columns used:

* ``e1.value``, ``e2.value``, ``e3.value``: entity names;
* ``e2.aliases``, ``e3.aliases``: stringified lists (JSON or Python literal) of names;
* ``r2(r1(e1)).prompt``: the two-hop prompt, e.g. "The mother of the singer of 'Superstition' is";
* ``r2(r1(e1)).subject_cut.prompt``: that prompt cut right after the descriptive mention of
  the bridge e2, e.g. "The mother of the singer of 'Superstition'";
* ``r2(e2).prompt``: the one-hop prompt of the second hop, e.g. "The mother of Stevie Wonder is";
* optional: ``r1.type``, ``r2.type`` (relation names) and ``r1(e1).prompt`` (first hop alone).

:func:`read_twohopfact` returns the chains in the shared two-hop schema (see :mod:`.schema`)
plus the rows it could not map, with the reason, in a separate ``rejected`` table: nothing
is dropped silently. The descriptive mention ends where the (right-stripped) cut prompt ends,
and starts where the two-hop prompt stops sharing the one-hop prompt's relation prefix (the
text before e2's name in the one-hop prompt; failing that, their common prefix backed off
to a word boundary).
"""

from __future__ import annotations

import ast
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .schema import TWO_HOP_COLUMNS, TWO_HOP_SPLITS, SchemaError, validate_two_hop

REQUIRED_COLUMNS = [
    "e1.value",
    "e2.value",
    "e3.value",
    "e2.aliases",
    "e3.aliases",
    "r2(e2).prompt",
    "r2(r1(e1)).prompt",
    "r2(r1(e1)).subject_cut.prompt",
]
OPTIONAL_COLUMNS = ["r1.type", "r2.type", "r1(e1).prompt"]

REJECTED_COLUMNS = ["row", "e1", "e2", "e3", "prompt_two_hop", "reason"]


class TwoHopFactFormatError(SchemaError):
    """The TwoHopFact CSV is not in the expected format."""


@dataclass
class TwoHopFactTable:
    """``chains``: the two-hop table (validated); ``rejected``: unmapped CSV rows
    (``row`` is the 0-based data row of the CSV) with the reason."""

    chains: pd.DataFrame
    rejected: pd.DataFrame

    def __iter__(self):  # ``chains, rejected = read_twohopfact(...)``
        return iter((self.chains, self.rejected))

    def summary(self) -> dict:
        return {
            "chains": int(len(self.chains)),
            "rejected": int(len(self.rejected)),
            "rejected_by_reason": self.rejected["reason"].str.split(":").str[0].value_counts().to_dict(),
            "compositions": int(self.chains["composition"].nunique()) if len(self.chains) else 0,
        }


def read_twohopfact(csv_path: str | Path, split: str = "held_out") -> TwoHopFactTable:
    """Read a TwoHopFact CSV into the shared two-hop schema.

    Every TwoHopFact chain is held out (no model here was trained on it), hence the
    default ``split``. Raises :class:`TwoHopFactFormatError` listing missing columns.
    """
    if split not in TWO_HOP_SPLITS:
        raise ValueError(f"split must be one of {TWO_HOP_SPLITS}, not {split!r}")
    csv_path = Path(csv_path)
    df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise TwoHopFactFormatError(
            f"TwoHopFact CSV {csv_path}: missing columns {missing}; required {REQUIRED_COLUMNS}"
        )

    chains, rejected = [], []
    for i, rec in enumerate(df.to_dict("records")):
        try:
            chains.append(_chain(rec, split))
        except _Reject as exc:
            rejected.append(
                {
                    "row": i,
                    "e1": rec.get("e1.value", ""),
                    "e2": rec.get("e2.value", ""),
                    "e3": rec.get("e3.value", ""),
                    "prompt_two_hop": rec.get("r2(r1(e1)).prompt", ""),
                    "reason": str(exc),
                }
            )
    out = pd.DataFrame(chains, columns=TWO_HOP_COLUMNS)
    out = out.astype({"mention_start": int, "mention_end": int})
    out = validate_two_hop(out, source=f"TwoHopFact {csv_path}")
    return TwoHopFactTable(
        chains=out.reset_index(drop=True), rejected=pd.DataFrame(rejected, columns=REJECTED_COLUMNS)
    )


# ----------------------------------------------------------------------------------------


class _Reject(Exception):
    """A row that cannot be mapped; the message is the reason."""


def parse_aliases(text: str, fallback: str) -> list[str]:
    """A stringified list of names (JSON, else a Python literal; never ``eval``), with
    ``fallback`` (the entity's main name) first. Empty text gives ``[fallback]``."""
    text = (text or "").strip()
    if not text:
        values = []
    else:
        try:
            values = json.loads(text)
        except json.JSONDecodeError:
            try:
                values = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
                raise _Reject(f"unparsable aliases: {text[:80]!r} ({type(exc).__name__})") from None
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, (list, tuple, set)) or not all(isinstance(v, str) for v in values):
            raise _Reject(f"aliases are not a list of strings: {text[:80]!r}")
    out = [fallback] if fallback else []
    for v in values:
        if v and v not in out:
            out.append(v)
    return out


def locate_mention(two_hop: str, cut: str, one_hop: str, e2: str) -> tuple[int, int]:
    """Character span ``[start, end)`` of the descriptive mention in ``two_hop``."""
    cut = cut.rstrip()
    if not cut:
        raise _Reject("empty subject-cut prompt")
    if not two_hop.startswith(cut):
        raise _Reject(f"subject-cut prompt is not a prefix of the two-hop prompt: {cut!r}")
    end = len(cut)
    start = None
    # The one-hop prompt's relation prefix is the text before e2's name.
    pos = one_hop.find(e2) if e2 else -1
    if pos >= 0 and two_hop.startswith(one_hop[:pos]) and pos < end:
        start = pos
    if start is None:
        k = len(os.path.commonprefix([two_hop, one_hop]))
        while k > 0 and not two_hop[k - 1].isspace():  # back off to the start of a word
            k -= 1
        start = k
    while start < end and two_hop[start].isspace():
        start += 1
    if start >= end:
        raise _Reject(
            f"no descriptive mention: the two-hop prompt shares {two_hop[:end]!r} with the one-hop prompt {one_hop!r}"
        )
    return start, end


def _value(rec: dict, col: str) -> str:
    v = rec.get(col, "")
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v)


def _chain(rec: dict, split: str) -> dict:
    e1, e2, e3 = (_value(rec, f"{e}.value").strip() for e in ("e1", "e2", "e3"))
    two_hop = _value(rec, "r2(r1(e1)).prompt")
    one_hop = _value(rec, "r2(e2).prompt")
    cut = _value(rec, "r2(r1(e1)).subject_cut.prompt")
    empty = [n for n, v in (("e1.value", e1), ("e2.value", e2), ("e3.value", e3), ("r2(r1(e1)).prompt", two_hop),
                            ("r2(e2).prompt", one_hop)) if not v]
    if empty:
        raise _Reject(f"empty fields: {empty}")
    start, end = locate_mention(two_hop, cut, one_hop, e2)
    mention = two_hop[start:end]
    e2_aliases = parse_aliases(_value(rec, "e2.aliases"), e2)
    e3_aliases = parse_aliases(_value(rec, "e3.aliases"), e3)
    r1 = _value(rec, "r1.type").strip() or _derive_relation(mention, [e1])
    r2 = _value(rec, "r2.type").strip() or _derive_relation(one_hop, e2_aliases)
    return {
        "composition": f"{r1}>{r2}",
        "e1": e1,
        "r1": r1,
        "e2": e2,
        "r2": r2,
        "e3": e3,
        "prompt_two_hop": two_hop,
        "mention_start": start,
        "mention_end": end,
        "prompt_one_hop": one_hop,
        # "" when the CSV has no first-hop prompt.
        "prompt_first_hop": _value(rec, "r1(e1).prompt"),
        "e2_aliases": e2_aliases,
        "e3_aliases": e3_aliases,
        "split": split,
    }


def _derive_relation(text: str, names: list[str]) -> str:
    """A relation label when the CSV names none: ``text`` with the entity (its first name
    found, longest first) replaced by ``{}`` ("the singer of '{}'", "The mother of {} is")."""
    for name in sorted((n for n in names if n), key=len, reverse=True):
        if name in text:
            return text.replace(name, "{}", 1)
    return text


# ----------------------------------------------------------------------------------------
# A TwoHopFact-shaped table generated offline (for the paper-scale simulation)
# ----------------------------------------------------------------------------------------


def to_twohopfact_frame(two_hop: pd.DataFrame) -> pd.DataFrame:
    """A two-hop table in the shared schema written in TwoHopFact's CSV columns, so that
    :func:`read_twohopfact` maps it back: aliases as JSON lists, the subject-cut prompt as
    the two-hop prompt up to the end of the descriptive mention."""
    two_hop = validate_two_hop(two_hop)
    return pd.DataFrame(
        {
            "r1.type": two_hop["r1"],
            "r2.type": two_hop["r2"],
            "e1.value": two_hop["e1"],
            "e2.value": two_hop["e2"],
            "e3.value": two_hop["e3"],
            "e2.aliases": [json.dumps(list(a)) for a in two_hop["e2_aliases"]],
            "e3.aliases": [json.dumps(list(a)) for a in two_hop["e3_aliases"]],
            "r1(e1).prompt": two_hop["prompt_first_hop"],
            "r2(e2).prompt": two_hop["prompt_one_hop"],
            "r2(r1(e1)).prompt": two_hop["prompt_two_hop"],
            "r2(r1(e1)).subject_cut.prompt": [
                p[:end] for p, end in zip(two_hop["prompt_two_hop"], two_hop["mention_end"], strict=True)
            ],
        }
    )


def simulate_twohopfact(n_chains: int, seed: int = 0) -> pd.DataFrame:
    """``n_chains`` two-hop chains of a synthetic world (:mod:`.world`) sized to hold them,
    a seeded sample, in TwoHopFact's CSV columns (:func:`to_twohopfact_frame`). The world
    has two person-based compositions, so it gets about ``n_chains / 2`` people."""
    from .world import WorldConfig, generate_world  # the world module is only needed here

    if n_chains < 1:
        raise ValueError(f"n_chains must be >= 1, got {n_chains}")
    people = max(100, math.ceil(n_chains / 2))
    names = math.ceil(math.sqrt(people)) + 10
    world = generate_world(WorldConfig(seed=seed, n_people=people, n_first_names=names, n_last_names=names))
    chains = world.two_hop_table()
    if len(chains) < n_chains:  # cannot happen with the sizes above; say so if it does
        raise ValueError(f"the synthetic world holds {len(chains)} chains, fewer than the {n_chains} asked for")
    chains = chains.sample(n=n_chains, random_state=seed).sort_index()
    return to_twohopfact_frame(chains)


def write_twohopfact_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a TwoHopFact-shaped frame as CSV, atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial")
    frame.to_csv(staging, index=False)
    os.replace(staging, path)
    return path
