"""Well-known world facts written for this project, in the shared one-hop and two-hop schema.

The facts ship with the package (``knowledge/data/``), so a study on a real model needs no
download:

* ``world_facts.csv``: ``relation, subject, article, object, object_aliases`` (aliases
  separated by ``|``; ``article`` is "the" for names used with it in running text, "the
  Eiffel Tower", "the United States"). Five relations: country -> capital, country ->
  continent, landmark -> country, country -> main language, country -> currency. Only facts
  that are unambiguous were written: countries with several capitals (South Africa, Bolivia),
  a capital on the move (Indonesia) or a disputed one, transcontinental countries, countries
  with several main languages, landmarks shared by two countries are left out.
* ``capital_country`` (capital -> country) is derived from the capitals, the country's
  aliases gathered from the other rows;
* ``two_hop_chains.csv``: hand-picked chains ``r1, e1, r2``; the bridge ``e2 = r1(e1)`` and
  answer ``e3 = r2(e2)`` come from the fact table, and the two-hop prompt is r2's prompt
  with the bridge described by r1's mention ("The capital of the country where the Eiffel
  Tower is located is" -> Paris).

``FACTS_VERSION`` names the data files' version; bump it when they change.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from importlib import resources

import pandas as pd

from .schema import SchemaError, validate_one_hop, validate_two_hop

FACTS_VERSION = "1"
DATA_PACKAGE = "fkr_kedro.knowledge"  # files under its data/ folder


@dataclass(frozen=True)
class FactRelation:
    # Prompt with the object last, cut before it; "{s}" is the subject (with its article).
    template: str
    # Noun phrase describing r(s), for the bridge in a two-hop prompt.
    mention: str
    # Statement used as a calibration text (the object follows the prompt).
    statement: str = "{prompt} {o}."


FACT_RELATIONS: dict[str, FactRelation] = {
    "country_capital": FactRelation("The capital of {s} is", "the capital of {s}"),
    "country_continent": FactRelation("{s} is located on the continent of", "the continent of {s}"),
    "landmark_country": FactRelation("{s} is located in the country of", "the country where {s} is located"),
    "country_language": FactRelation("The main language spoken in {s} is", "the main language spoken in {s}"),
    "country_currency": FactRelation("The currency of {s} is the", "the currency of {s}"),
    "capital_country": FactRelation("{s} is the capital of", "the country whose capital is {s}"),
}


@dataclass
class WorldFacts:
    """The fact table (one row per relation and subject) and the two-hop chains."""

    facts: pd.DataFrame  # relation, subject, article, object, object_aliases (list)
    chains: pd.DataFrame  # r1, e1, r2

    def one_hop_table(self) -> pd.DataFrame:
        rows = []
        for rec in self.facts.itertuples(index=False):
            prompt, start = fill(FACT_RELATIONS[rec.relation].template, rec.subject, rec.article)
            rows.append((rec.relation, rec.subject, rec.object, prompt, start, start + len(rec.subject), list(rec.object_aliases)))
        table = pd.DataFrame(
            rows, columns=["relation", "subject", "object", "prompt", "subject_start", "subject_end", "object_aliases"]
        )
        return validate_one_hop(table, f"world facts v{FACTS_VERSION}")

    def two_hop_table(self) -> pd.DataFrame:
        index = self.facts.set_index(["relation", "subject"])
        rows = []
        for r1, e1, r2 in self.chains[["r1", "e1", "r2"]].itertuples(index=False):
            first = _lookup(index, r1, e1, "chain's first hop")
            e2 = first["object"]
            second = _lookup(index, r2, e2, f"chain's second hop (bridge of {e1!r})")
            e2_article = _article_of(index, e2)
            mention = FACT_RELATIONS[r1].mention.format(s=_with_article(e1, first["article"]))
            prompt_two_hop, start = fill(FACT_RELATIONS[r2].template, mention, "")
            # A sentence-initial mention is capitalised ("The country where ...").
            mention_text = prompt_two_hop[start : start + len(mention)]
            rows.append(
                {
                    "composition": f"{r1}>{r2}",
                    "e1": e1, "r1": r1, "e2": e2, "r2": r2, "e3": second["object"],
                    "prompt_two_hop": prompt_two_hop,
                    "mention_start": start,
                    "mention_end": start + len(mention_text),
                    "prompt_one_hop": fill(FACT_RELATIONS[r2].template, e2, e2_article)[0],
                    "prompt_first_hop": fill(FACT_RELATIONS[r1].template, e1, first["article"])[0],
                    "e2_aliases": list(first["object_aliases"]),
                    "e3_aliases": list(second["object_aliases"]),
                    # No model saw these chains stated as such: all held out.
                    "split": "held_out",
                }
            )
        return validate_two_hop(pd.DataFrame(rows), f"world facts v{FACTS_VERSION} two-hop chains")

    def statements(self) -> list[str]:
        """One statement per fact ("The capital of France is Paris."): calibration texts."""
        return [f"{prompt} {obj}." for prompt, obj in zip(self.one_hop_table()["prompt"], self.facts["object"])]

    def knowledge_bits(self) -> float:
        """Sum over facts of log2(number of distinct objects of the relation)."""
        n_objects = self.facts.groupby("relation")["object"].nunique()
        return float(sum(math.log2(n_objects[r]) for r in self.facts["relation"] if n_objects[r] > 1))


def load_world_facts() -> WorldFacts:
    """Read and check the shipped fact set (no duplicate subject per relation, no empty
    field, one object per subject, every chain resolvable)."""
    data = resources.files(DATA_PACKAGE) / "data"
    with resources.as_file(data / "world_facts.csv") as path, open(path, newline="", encoding="utf-8") as f:
        records = list(csv.DictReader(f))
    with resources.as_file(data / "two_hop_chains.csv") as path:
        chains = pd.read_csv(path, dtype=str, keep_default_na=False)
    facts = pd.DataFrame(records, columns=["relation", "subject", "article", "object", "object_aliases"])
    facts["object_aliases"] = [_aliases(o, a) for o, a in zip(facts["object"], facts["object_aliases"])]
    facts = pd.concat([facts, _capital_country(facts)], ignore_index=True)
    check_facts(facts)
    world = WorldFacts(facts=facts, chains=chains)
    world.two_hop_table()  # every chain must resolve
    return world


def check_facts(facts: pd.DataFrame) -> None:
    unknown = sorted(set(facts["relation"]) - set(FACT_RELATIONS))
    if unknown:
        raise SchemaError(f"world facts: unknown relations {unknown}; known: {sorted(FACT_RELATIONS)}")
    empty = facts[(facts[["relation", "subject", "object"]] == "").any(axis=1)]
    if len(empty):
        raise SchemaError(f"world facts: empty fields in rows {empty.index.tolist()[:5]}")
    dupes = facts[facts.duplicated(["relation", "subject"], keep=False)]
    if len(dupes):
        raise SchemaError(
            "world facts: a subject appears twice in one relation (one object per subject): "
            f"{dupes[['relation', 'subject', 'object']].values.tolist()[:5]}"
        )
    bad_article = sorted(set(facts["article"]) - {"", "the"})
    if bad_article:
        raise SchemaError(f"world facts: article must be '' or 'the', found {bad_article}")


def fill(template: str, subject: str, article: str) -> tuple[str, int]:
    """The prompt with the subject (after its article) filled in, and the subject's start.
    A sentence-initial article or mention is capitalised."""
    before, after = template.split("{s}")
    lead = f"{article} " if article else ""
    if not before:
        lead = lead[:1].upper() + lead[1:] if lead else ""
        if not lead:
            subject = subject[:1].upper() + subject[1:]
    return before + lead + subject + after, len(before) + len(lead)


def _with_article(name: str, article: str) -> str:
    return f"{article} {name}" if article else name


def _lookup(index: pd.DataFrame, relation: str, subject: str, what: str) -> pd.Series:
    if relation not in FACT_RELATIONS:
        raise SchemaError(f"two-hop chains: unknown relation {relation!r} in the {what}")
    try:
        return index.loc[(relation, subject)]
    except KeyError:
        raise SchemaError(f"two-hop chains: no fact ({relation}, {subject!r}) for the {what}") from None


def _article_of(index: pd.DataFrame, name: str) -> str:
    """The article a country takes, read from its rows as a subject."""
    for relation in ("country_capital", "country_continent", "country_language", "country_currency"):
        if (relation, name) in index.index:
            return index.loc[(relation, name)]["article"]
    return ""


def _aliases(obj: str, text: str) -> list[str]:
    out = [obj]
    for alias in (text or "").split("|"):
        alias = alias.strip()
        if alias and alias not in out:
            out.append(alias)
    return out


def _capital_country(facts: pd.DataFrame) -> pd.DataFrame:
    """capital -> country, the country's aliases gathered from the rows naming it as object."""
    country_aliases: dict[str, list[str]] = {}
    for obj, aliases in zip(facts["object"], facts["object_aliases"]):
        country_aliases.setdefault(obj, [obj])
        country_aliases[obj] += [a for a in aliases if a not in country_aliases[obj]]
    capitals = facts[facts["relation"] == "country_capital"]
    return pd.DataFrame(
        {
            "relation": "capital_country",
            "subject": capitals["object"].values,
            "article": "",
            "object": capitals["subject"].values,
            "object_aliases": [country_aliases.get(c, [c]) for c in capitals["subject"]],
        }
    )
