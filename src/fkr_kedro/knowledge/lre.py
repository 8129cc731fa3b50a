"""Reader for the LRE relations dataset (Hernandez et al., "Linearity of Relation Decoding").

LRE ships one JSON file per relation, in folders by relation type (``bias/``,
``commonsense/``, ``factual/``, ``linguistic/``)::

    {"name": "country capital city",
     "prompt_templates": ["The capital city of {} is", ...],
     "properties": {"relation_type": "factual", "domain_name": ..., "range_name": ..., "symmetric": false},
     "samples": [{"subject": "France", "object": "Paris"}, ...]}

:func:`read_lre` turns the folder into the shared one-hop schema (see :mod:`.schema`): one
row per (relation, subject), the chosen template filled with the subject, the subject's
character span, the object as answer and every object of that subject as aliases (LRE has
a few one-to-many relations, e.g. ``superhero_person``: "Green Lantern" has five). Facts are
never dropped silently: :class:`LREReport` counts, per relation, the samples read, the exact
duplicates and one-to-many subjects merged, and the rows whose subject could not be placed
(template without exactly one ``{}``; subject span not on token boundaries of the given
tokenizer), which are listed in ``LREReport.unplaced`` with a reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from .schema import ONE_HOP_COLUMNS, SchemaError, validate_one_hop

LRE_RELATION_TYPES = ("bias", "commonsense", "factual", "linguistic")

COUNT_COLUMNS = [
    "relation",
    "relation_type",
    "name",
    "file",
    "template",
    "facts",  # samples in the file
    "exact_duplicates",  # samples repeating an earlier (subject, object) pair
    "unique_subjects",  # rows after merging: one per subject
    "one_to_many_subjects",  # subjects with more than one distinct object
    "placed",  # rows in LREReport.one_hop
    "unplaced",  # rows in LREReport.unplaced
]

UNPLACED_COLUMNS = ["relation", "subject", "object", "prompt", "reason"]


class LREFormatError(SchemaError):
    """An LRE relation file is not in the expected format."""


@dataclass
class LREReport:
    """What :func:`read_lre` read.

    * ``one_hop``: placed rows in the shared one-hop schema (validated), with the extra
      columns ``relation_type`` and ``n_objects``;
    * ``counts``: one row per relation (columns :data:`COUNT_COLUMNS`); per relation
      ``facts == exact_duplicates + (distinct objects over all subjects)`` and
      ``unique_subjects == placed + unplaced``;
    * ``unplaced``: rows that could not be placed, with the reason.
    """

    one_hop: pd.DataFrame
    counts: pd.DataFrame
    unplaced: pd.DataFrame

    def summary(self) -> dict:
        c = self.counts
        return {
            "relations": int(len(c)),
            "facts": int(c["facts"].sum()),
            "rows": int(c["unique_subjects"].sum()),
            "placed": int(c["placed"].sum()),
            "unplaced": int(c["unplaced"].sum()),
            "one_to_many_subjects": int(c["one_to_many_subjects"].sum()),
            "exact_duplicates": int(c["exact_duplicates"].sum()),
            "facts_per_type": {k: int(v) for k, v in c.groupby("relation_type")["facts"].sum().items()},
        }


def read_lre(
    folder: str | Path,
    relation_types: Iterable[str] | None = None,
    template_index: int = 0,
    tokenizer=None,
) -> LREReport:
    """Read every ``*.json`` relation file under ``folder`` (recursively, sorted by path).

    ``relation_types`` keeps only relations whose ``properties.relation_type`` is listed.
    ``template_index`` picks the prompt template (a relation with fewer templates gets all
    its rows unplaced). With a ``tokenizer`` (a Hugging Face fast tokenizer), a subject is
    placed only if its span starts and ends on token boundaries of the filled prompt.
    Raises :class:`LREFormatError` naming the file for malformed files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"LRE folder {folder} does not exist")
    files = sorted(folder.rglob("*.json"))
    if not files:
        raise FileNotFoundError(f"no *.json relation files under {folder}")
    wanted = None if relation_types is None else set(relation_types)

    relations = [_load_relation(path, folder) for path in files]
    names = [r["relation"] for r in relations]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise LREFormatError(f"{folder}: several files define relations {dupes}")
    if wanted is not None:
        relations = [r for r in relations if r["relation_type"] in wanted]
        if not relations:
            raise ValueError(f"no LRE relation of types {sorted(wanted)} under {folder}")

    rows, unplaced, counts = [], [], []
    for rel in relations:
        merged, exact_dupes = _merge_subjects(rel["samples"])
        templates = rel["templates"]
        template = templates[template_index] if -len(templates) <= template_index < len(templates) else None
        rel_rows, rel_unplaced = [], []
        for subject, objects in merged.items():
            base = {"relation": rel["relation"], "subject": subject, "object": objects[0]}
            if template is None:
                rel_unplaced.append({**base, "prompt": "", "reason": f"no template at index {template_index}"})
                continue
            if template.count("{}") != 1:
                rel_unplaced.append(
                    {**base, "prompt": template, "reason": f"template has {template.count('{}')} '{{}}' slots, not 1"}
                )
                continue
            if not subject:
                rel_unplaced.append({**base, "prompt": template, "reason": "empty subject"})
                continue
            before, after = template.split("{}")
            rel_rows.append(
                {
                    **base,
                    "prompt": before + subject + after,
                    "subject_start": len(before),
                    "subject_end": len(before) + len(subject),
                    "object_aliases": list(objects),
                    "relation_type": rel["relation_type"],
                    "n_objects": len(objects),
                }
            )
        if tokenizer is not None and rel_rows:
            ok, reasons = _token_aligned(tokenizer, rel_rows)
            kept = []
            for row, good, reason in zip(rel_rows, ok, reasons):
                if good:
                    kept.append(row)
                else:
                    rel_unplaced.append({k: row[k] for k in ("relation", "subject", "object", "prompt")} | {"reason": reason})
            rel_rows = kept
        rows += rel_rows
        unplaced += rel_unplaced
        counts.append(
            {
                "relation": rel["relation"],
                "relation_type": rel["relation_type"],
                "name": rel["name"],
                "file": rel["file"],
                "template": template,
                "facts": len(rel["samples"]),
                "exact_duplicates": exact_dupes,
                "unique_subjects": len(merged),
                "one_to_many_subjects": sum(len(v) > 1 for v in merged.values()),
                "placed": len(rel_rows),
                "unplaced": len(rel_unplaced),
            }
        )

    one_hop = pd.DataFrame(rows, columns=ONE_HOP_COLUMNS + ["relation_type", "n_objects"])
    one_hop = validate_one_hop(one_hop.astype({"subject_start": int, "subject_end": int}), source=f"LRE {folder}")
    return LREReport(
        one_hop=one_hop.reset_index(drop=True),
        counts=pd.DataFrame(counts, columns=COUNT_COLUMNS),
        unplaced=pd.DataFrame(unplaced, columns=UNPLACED_COLUMNS),
    )


# ----------------------------------------------------------------------------------------


def _load_relation(path: Path, root: Path) -> dict:
    def fail(problem: str) -> LREFormatError:
        return LREFormatError(f"LRE file {path}: {problem}")

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise fail(f"invalid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise fail(f"top level is a {type(data).__name__}, not an object")
    missing = [k for k in ("samples", "prompt_templates") if k not in data]
    if missing:
        raise fail(f"missing keys {missing}")
    templates = data["prompt_templates"]
    if not isinstance(templates, list) or not templates or not all(isinstance(t, str) for t in templates):
        raise fail("'prompt_templates' must be a non-empty list of strings")
    samples = data["samples"]
    if not isinstance(samples, list):
        raise fail("'samples' must be a list")
    clean = []
    for i, s in enumerate(samples):
        if not isinstance(s, dict):
            raise fail(f"sample {i} is a {type(s).__name__}, not an object")
        lacking = [k for k in ("subject", "object") if k not in s or s[k] is None]
        if lacking:
            raise fail(f"sample {i} lacks {lacking}: {s!r}")
        for k in ("subject", "object"):
            if isinstance(s[k], bool) or not isinstance(s[k], (str, int, float)):
                raise fail(f"sample {i}: {k} is a {type(s[k]).__name__}, not a string: {s!r}")
        clean.append((str(s["subject"]), str(s["object"])))
    props = data.get("properties") or {}
    if not isinstance(props, dict):
        raise fail("'properties' must be an object")
    rel_path = path.relative_to(root)
    # Relation type from the properties, else from the folder the file sits in.
    relation_type = props.get("relation_type") or (rel_path.parts[0] if len(rel_path.parts) > 1 else "unknown")
    return {
        "relation": path.stem,
        "name": data.get("name", path.stem),
        "relation_type": str(relation_type),
        "file": str(rel_path),
        "templates": templates,
        "samples": clean,
    }


def _merge_subjects(samples: Sequence[tuple[str, str]]) -> tuple[dict[str, list[str]], int]:
    """Subject -> distinct objects in file order; and the number of exact duplicate samples."""
    merged: dict[str, list[str]] = {}
    exact = 0
    for subject, obj in samples:
        objs = merged.setdefault(subject, [])
        if obj in objs:
            exact += 1
        else:
            objs.append(obj)
    return merged, exact


def _token_aligned(tokenizer, rows: list[dict]) -> tuple[list[bool], list[str]]:
    """Whether each row's subject span starts and ends on token boundaries.

    A byte-level BPE token carrying its leading space (offsets not trimmed) starts one
    character before the word: a token starting at ``start - 1`` counts as starting the
    subject when ``prompt[start - 1]`` is whitespace.
    """
    enc = tokenizer([r["prompt"] for r in rows], add_special_tokens=False, return_offsets_mapping=True)
    ok, reasons = [], []
    for row, offsets in zip(rows, enc["offset_mapping"]):
        prompt, start, end = row["prompt"], row["subject_start"], row["subject_end"]
        pairs = [(int(s), int(e)) for s, e in offsets if int(e) > int(s)]
        starts = {s for s, _ in pairs}
        ends = {e for _, e in pairs}
        good_start = start in starts or (start > 0 and prompt[start - 1].isspace() and (start - 1) in starts)
        good_end = end in ends
        ok.append(good_start and good_end)
        if good_start and good_end:
            reasons.append("")
        else:
            which = " and ".join(
                w for w, g in (("start", good_start), ("end", good_end)) if not g
            )
            reasons.append(f"subject {which} not on a token boundary (offsets {pairs})")
    return ok, reasons
