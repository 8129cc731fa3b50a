"""One schema for evaluation prompts, shared by every knowledge source.

The synthetic world, LRE and TwoHopFact all end up as two tidy tables:

* one-hop rows (knowledge memorization): ``relation, subject, object, prompt,
  subject_start, subject_end, object_aliases``: ``prompt[subject_start:subject_end]``
  is the subject mention and the object completes the prompt;
* two-hop rows (latent multi-hop reasoning): a chain ``e1 -r1-> e2 -r2-> e3`` with the
  two-hop prompt (bridge only described, never named), the character span of the
  descriptive mention of the bridge, the one-hop prompt of the second hop alone
  (``r2(e2)``) and of the first hop alone (``r1(e1)``).

Spans are Python character offsets (end exclusive); positions in tokens are derived
later from the tokenizer's offsets, never by splitting on spaces.
"""

from __future__ import annotations

import pandas as pd

from .chance import chance_rates

ONE_HOP_COLUMNS = [
    "relation",
    "subject",
    "object",
    "prompt",
    "subject_start",
    "subject_end",
    "object_aliases",
]

TWO_HOP_COLUMNS = [
    "composition",
    "e1",
    "r1",
    "e2",
    "r2",
    "e3",
    "prompt_two_hop",
    "mention_start",
    "mention_end",
    "prompt_one_hop",
    "prompt_first_hop",
    "e2_aliases",
    "e3_aliases",
    "split",
]

# Two-hop splits: "seen" chains are stated in the training corpus, "held_out" are not.
TWO_HOP_SPLITS = ("seen", "held_out")

# The evaluate pipeline's per-prompt scores (``analysis.recall.evaluate_one_hop`` and
# ``evaluate_two_hop``): the prompt's keys, then what the model answered and whether it is right.
SCORE_COLUMNS = ["generated", "correct", "answer_logprob"]
ONE_HOP_SCORE_COLUMNS = ["relation", "subject", "object", *SCORE_COLUMNS]
TWO_HOP_SCORE_COLUMNS = ["composition", "e1", "e2", "e3", "split", "readout", *SCORE_COLUMNS]


class SchemaError(ValueError):
    """A knowledge table does not follow the shared schema."""


def validate_one_hop(df: pd.DataFrame, source: str = "one-hop table") -> pd.DataFrame:
    """Check columns and spans of a one-hop table; return it with columns in order."""
    _require_columns(df, ONE_HOP_COLUMNS, source)
    _check_spans(df, "prompt", "subject_start", "subject_end", "subject", source)
    return df[ONE_HOP_COLUMNS + [c for c in df.columns if c not in ONE_HOP_COLUMNS]]


def validate_two_hop(df: pd.DataFrame, source: str = "two-hop table") -> pd.DataFrame:
    """Check columns, spans and splits of a two-hop table; return it with columns in order."""
    _require_columns(df, TWO_HOP_COLUMNS, source)
    _check_spans(df, "prompt_two_hop", "mention_start", "mention_end", None, source)
    bad_split = ~df["split"].isin(TWO_HOP_SPLITS)
    if bad_split.any():
        raise SchemaError(
            f"{source}: column 'split' must be one of {TWO_HOP_SPLITS}; "
            f"found {sorted(df.loc[bad_split, 'split'].unique())[:5]}"
        )
    return df[TWO_HOP_COLUMNS + [c for c in df.columns if c not in TWO_HOP_COLUMNS]]


def validate_one_hop_scores(df: pd.DataFrame, source: str = "one-hop scores") -> pd.DataFrame:
    """Check the columns of a one-hop score table, its keys complete and ``correct`` boolean."""
    return _validate_scores(df, ONE_HOP_SCORE_COLUMNS, ["relation", "subject", "object"], source)


def validate_two_hop_scores(df: pd.DataFrame, source: str = "two-hop scores") -> pd.DataFrame:
    """Check the columns of a two-hop score table, its keys complete, ``correct`` boolean
    and its splits known."""
    df = _validate_scores(df, TWO_HOP_SCORE_COLUMNS, ["composition", "e1", "e2", "e3", "split", "readout"], source)
    bad_split = ~df["split"].isin(TWO_HOP_SPLITS)
    if bad_split.any():
        raise SchemaError(f"{source}: column 'split' must be one of {TWO_HOP_SPLITS}; found {sorted(df.loc[bad_split, 'split'].unique())[:5]}")
    return df


def _validate_scores(df: pd.DataFrame, columns: list[str], keys: list[str], source: str) -> pd.DataFrame:
    _require_columns(df, columns, source)
    missing = [c for c in keys if df[c].isna().any()]
    if missing:
        raise SchemaError(f"{source}: column(s) {missing} have missing values in rows {df.index[df[missing].isna().any(axis=1)].tolist()[:5]}")
    if len(df) and not pd.api.types.is_bool_dtype(df["correct"]):
        raise SchemaError(f"{source}: column 'correct' must be boolean, not {df['correct'].dtype}")
    return df[columns + [c for c in df.columns if c not in columns]]


def _require_columns(df: pd.DataFrame, columns: list[str], source: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SchemaError(f"{source}: missing columns {missing}; expected {columns}")


def _check_spans(
    df: pd.DataFrame, text_col: str, start_col: str, end_col: str, expect_col: str | None, source: str
) -> None:
    for i, row in enumerate(df.itertuples(index=False)):
        text = getattr(row, text_col)
        start, end = int(getattr(row, start_col)), int(getattr(row, end_col))
        if not 0 <= start < end <= len(text):
            raise SchemaError(
                f"{source}, row {i}: span [{start}, {end}) lies outside {text_col} {text!r}"
            )
        if expect_col is not None and text[start:end] != getattr(row, expect_col):
            raise SchemaError(
                f"{source}, row {i}: {text_col}[{start}:{end}] is {text[start:end]!r}, "
                f"not the {expect_col} {getattr(row, expect_col)!r}"
            )


def sample_per_group(table: pd.DataFrame, by: list[str], max_rows: int, seed: int) -> pd.DataFrame:
    """At most ``max_rows`` rows of each group, drawn with a fixed seed; small groups whole."""
    shuffled = table.sample(frac=1.0, random_state=seed)
    return shuffled.groupby(by, sort=False).head(max_rows).sort_index().reset_index(drop=True)


def prompt_summary(one_hop: pd.DataFrame, two_hop: pd.DataFrame) -> dict:
    """What the evaluation prompts hold: chains per composition and split, their chance
    rates, and the number of prompts of each table."""
    return {
        "two_hop_chains": two_hop.groupby(["composition", "split"]).size().unstack(fill_value=0).to_dict("index"),
        "two_hop_chance": chance_rates(two_hop).to_dict(),
        "evaluation_prompts": {"one_hop": len(one_hop), "two_hop": len(two_hop)},
    }


def empty_one_hop() -> pd.DataFrame:
    """A one-hop table with no rows (a study without one-hop prompts)."""
    return pd.DataFrame({column: pd.Series(dtype=_dtype(column)) for column in ONE_HOP_COLUMNS})


def empty_two_hop() -> pd.DataFrame:
    """A two-hop table with no rows (a study without two-hop prompts)."""
    return pd.DataFrame({column: pd.Series(dtype=_dtype(column)) for column in TWO_HOP_COLUMNS})


def _dtype(column: str) -> str:
    return "int64" if column.endswith(("_start", "_end")) else "object"
