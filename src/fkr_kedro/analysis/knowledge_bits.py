"""Knowledge in bits: how much a model holds about the objects of its one-hop facts.

The estimator of Allen-Zhu & Li, "Physics of Language Models: Part 3.3, Knowledge Capacity
Scaling Laws" (2024, arXiv:2404.05405): for an attribute whose value is drawn uniformly from
``|V|`` possible values, a model whose cross-entropy loss on the value's tokens is ``p``
nats (summed over the value's tokens, averaged over the N individuals) holds at least

    N * log2(|V| / e^p)  =  sum over facts of  [log2 |V| + log2 P(value | prompt)]

bits about it (the bit-complexity lower bound; their bioS/bioD formulas sum this over the
attributes, plus a name term that does not apply here: our subjects are given in the prompt).
Here an attribute is a relation, ``|V|`` the relation's distinct objects (the candidate set;
every object is equally likely a priori in the synthetic world), and ``P(value | prompt)``
the teacher-forced probability of the whole object name after the fact's prompt
(:func:`~fkr_kedro.analysis.recall.answer_logprobs`).

That probability is over every token sequence, not renormalised over the candidates: it is
at most the renormalised one, so the estimate stays a lower bound (as in the paper, which
uses the raw loss too) and needs one teacher-forced pass per fact instead of one per fact
and candidate. Two deviations, both documented in docs/capacity.md: a relation's total is
clipped at zero (a model worse than uniform holds at least zero bits, not a negative number),
and a fact's bits never exceed ``log2 |V|`` (they cannot: a log-probability is <= 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .recall import answer_logprobs

LN2 = math.log(2.0)
REQUIRED = ("relation", "prompt", "object")


def candidate_counts(facts: pd.DataFrame) -> pd.Series:
    """The candidate set's size per relation: the relation's distinct objects."""
    return facts.groupby("relation")["object"].nunique()


def fact_bits(answer_logprob: np.ndarray, n_candidates: np.ndarray) -> np.ndarray:
    """Per fact: log2 |V| + log2 P(object | prompt) (``answer_logprob`` in nats)."""
    return np.log2(np.asarray(n_candidates, dtype=float)) + np.asarray(answer_logprob, dtype=float) / LN2


def bits_by_relation(scored: pd.DataFrame) -> pd.DataFrame:
    """Per relation, from a table with ``relation``, ``object`` and ``answer_logprob`` (nats)
    for every fact: facts, candidates, the load (facts * log2 candidates), the mean loss
    of the object name in nats, and the stored bits (the load minus the loss in bits, at
    least zero). A relation with a single object carries no information (load 0)."""
    missing = [c for c in ("relation", "object", "answer_logprob") if c not in scored]
    if missing:
        raise ValueError(f"knowledge bits need the columns {missing} in the scored fact table")
    counts = candidate_counts(scored)
    frame = scored.assign(n_candidates=scored["relation"].map(counts))
    frame = frame.assign(bits=fact_bits(frame["answer_logprob"], frame["n_candidates"]))
    rows = []
    for relation, part in frame.groupby("relation", sort=True):
        n_candidates = int(part["n_candidates"].iloc[0])
        load = len(part) * math.log2(n_candidates)
        rows.append(
            {
                "relation": relation,
                "facts": len(part),
                "candidates": n_candidates,
                "load_bits": load,
                "loss_nats": float(-part["answer_logprob"].mean()),
                "stored_bits": max(0.0, float(part["bits"].sum())) if n_candidates > 1 else 0.0,
            }
        )
    return pd.DataFrame(rows, columns=["relation", "facts", "candidates", "load_bits", "loss_nats", "stored_bits"])


@dataclass(frozen=True)
class KnowledgeBits:
    """Stored bits per relation and in total, against the parameters and weight bits."""

    by_relation: pd.DataFrame
    parameters: int  # non-embedding (quantized linear) weights
    weight_bits: float  # bits stored for those weights

    @property
    def stored_bits(self) -> float:
        return float(self.by_relation["stored_bits"].sum())

    @property
    def load_bits(self) -> float:
        return float(self.by_relation["load_bits"].sum())

    def metrics(self) -> dict[str, float]:
        """Flat metrics: ``stored_bits`` and ``stored_bits.<relation>``, the load, the share
        of the load stored, bits per parameter and bits per stored weight bit."""
        out = {
            "stored_bits": self.stored_bits,
            "knowledge_load_bits": self.load_bits,
            "stored_fraction": self.stored_bits / self.load_bits if self.load_bits else float("nan"),
            "stored_bits_per_param": self.stored_bits / self.parameters if self.parameters else float("nan"),
            "stored_bits_per_weight_bit": self.stored_bits / self.weight_bits if self.weight_bits else float("nan"),
        }
        for row in self.by_relation.itertuples():
            out[f"stored_bits.{row.relation}"] = float(row.stored_bits)
        return out


def score_facts(model, tokenizer, facts: pd.DataFrame, batch_size: int = 256) -> pd.DataFrame:
    """Every fact's teacher-forced log-probability (nats) of its whole object name."""
    missing = [c for c in REQUIRED if c not in facts]
    if missing:
        raise ValueError(f"the fact table lacks the columns {missing} (one row per one-hop fact: relation, prompt, object)")
    logprob = answer_logprobs(model, tokenizer, facts["prompt"].tolist(), facts["object"].tolist(), batch_size)
    return facts[["relation", "object"]].reset_index(drop=True).assign(answer_logprob=logprob)


def measure_knowledge_bits(
    model, tokenizer, facts: pd.DataFrame, parameters: int, weight_bits: float, batch_size: int = 256
) -> KnowledgeBits:
    """Stored bits of a model over every fact of ``facts`` (one batched teacher-forced pass)."""
    return KnowledgeBits(bits_by_relation(score_facts(model, tokenizer, facts, batch_size)), parameters, weight_bits)


def footprint_denominators(footprint: Mapping[str, float]) -> tuple[int, float]:
    """(parameters, weight bits) from a footprint dict: the quantizable linears' weights and
    the bits stored for them (effective bits per weight times weights)."""
    weights = int(footprint["quantized_weights"])
    return weights, float(footprint["effective_bits"]) * weights


def knowledge_bits_sentences(table: pd.DataFrame, reference: str) -> list[str]:
    """Computed sentences on a ``recall_by_variant`` table that carries the bits metrics:
    the reference's stored bits against the load, and each variant's share of them."""
    head = table[table["relation"].isna()].pivot_table(index="variant", columns="metric", values="value", sort=False)
    if "stored_bits" not in head or reference not in head.index:
        return []
    ref = head.loc[reference]
    lines = [
        f"{reference} stores {ref['stored_bits']:,.0f} of the {ref['knowledge_load_bits']:,.0f} bits of one-hop "
        f"knowledge ({ref['stored_fraction']:.1%}; Physics of LMs 3.3's lower bound from the whole object name's "
        f"log-probability), {ref['stored_bits_per_param']:.3f} bits per non-embedding weight."
    ]
    others = [v for v in head.index if v != reference]
    if others and ref["stored_bits"] > 0:
        kept = (head.loc[others, "stored_bits"] / ref["stored_bits"]).sort_values()
        worst, best = kept.index[0], kept.index[-1]
        lines.append(
            f"Of the reference's stored bits, {worst} keeps the least ({kept.iloc[0]:.1%}, "
            f"{head.loc[worst, 'stored_bits_per_weight_bit']:.4f} bits per stored weight bit) and {best} the most "
            f"({kept.iloc[-1]:.1%}, {head.loc[best, 'stored_bits_per_weight_bit']:.4f} bits per stored weight bit)."
        )
    return lines
