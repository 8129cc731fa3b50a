"""Real models and data: the shipped world facts, answer matching as real models need it,
and the smollm2 and paper configurations."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from fkr_kedro.analysis.recall import is_whole_name_match, normalize, strip_article
from fkr_kedro.knowledge.schema import SchemaError
from fkr_kedro.knowledge.world_facts import FACT_RELATIONS, check_facts, load_world_facts
from fkr_kedro.modeling.load import ModelSourceError, as_source
from fkr_kedro.quantization.variants import VariantSpec, validate_variants

CONTINENTS = {"Africa", "Asia", "Europe", "North America", "South America", "Oceania"}


@pytest.fixture(scope="module")
def world_facts():
    return load_world_facts()


# ------------------------------------------------------------------------- world facts


def test_world_facts_are_a_few_hundred_valid_rows(world_facts):
    one_hop = world_facts.one_hop_table()  # validates the schema and every subject span
    assert len(world_facts.facts) >= 400 and set(one_hop["relation"]) == set(FACT_RELATIONS)
    assert not one_hop.duplicated(["relation", "subject"]).any()
    assert all(o == a[0] for o, a in zip(one_hop["object"], one_hop["object_aliases"]))
    # Prompts stop before the object (some subjects name it: "the Great Wall of China").
    assert not any(p.endswith(o) for o, p in zip(one_hop["object"], one_hop["prompt"]))
    row = one_hop[(one_hop["relation"] == "landmark_country") & (one_hop["subject"] == "Eiffel Tower")].iloc[0]
    assert row["prompt"] == "The Eiffel Tower is located in the country of" and row["object"] == "France"
    assert row["prompt"][row["subject_start"] : row["subject_end"]] == "Eiffel Tower"


def test_world_facts_do_not_contradict_each_other(world_facts):
    facts = world_facts.facts
    by = {r: dict(zip(f["subject"], f["object"])) for r, f in facts.groupby("relation")}
    capitals = by["country_capital"]
    assert len(set(capitals.values())) == len(capitals), "two countries share a capital"
    assert all(by["capital_country"][c] == country for country, c in capitals.items())
    assert set(by["country_continent"].values()) <= CONTINENTS
    # Every country named anywhere is one country: the landmarks' countries have a continent.
    assert set(by["landmark_country"].values()) <= set(by["country_continent"]) | {"Indonesia", "Turkey", "Russia", "Egypt", "Israel"}
    # Aliases are never another entity's main name in the same relation.
    for relation, frame in facts.groupby("relation"):
        mains = set(frame["object"])
        for obj, aliases in zip(frame["object"], frame["object_aliases"]):
            clash = (set(aliases) - {obj}) & mains
            assert not clash, f"{relation}: alias of {obj} is another object {clash}"


def test_duplicate_or_unknown_facts_are_rejected(world_facts):
    dup = pd.concat([world_facts.facts, world_facts.facts.iloc[:1].assign(object="Lyon")])
    with pytest.raises(SchemaError, match="one object per subject"):
        check_facts(dup)
    with pytest.raises(SchemaError, match="unknown relations"):
        check_facts(world_facts.facts.assign(relation="country_anthem"))


def test_two_hop_chains_follow_the_facts_and_point_at_the_mention(world_facts):
    chains = world_facts.two_hop_table()
    assert 20 <= len(chains) <= 50 and (chains["split"] == "held_out").all()
    by = {r: dict(zip(f["subject"], f["object"])) for r, f in world_facts.facts.groupby("relation")}
    for row in chains.itertuples(index=False):
        assert by[row.r1][row.e1] == row.e2 and by[row.r2][row.e2] == row.e3
        mention = row.prompt_two_hop[row.mention_start : row.mention_end]
        assert mention.lower().startswith("the country ") and row.e1 in mention and row.e2 not in row.prompt_two_hop
    eiffel = chains[(chains["e1"] == "Eiffel Tower") & (chains["r2"] == "country_capital")].iloc[0]
    assert eiffel["prompt_two_hop"] == "The capital of the country where the Eiffel Tower is located is"
    assert eiffel["prompt_two_hop"][eiffel["mention_start"] : eiffel["mention_end"]] == "the country where the Eiffel Tower is located"
    assert (eiffel["e2"], eiffel["e3"], eiffel["prompt_one_hop"]) == ("France", "Paris", "The capital of France is")


# ---------------------------------------------------------------------- answer matching


@pytest.mark.parametrize(
    ("generated", "aliases", "expected"),
    [
        (" Paris.\n\nThe answer is", ["Paris"], True),
        (" paris, the city of light", ["Paris"], True),  # case and punctuation
        (" the United States. It is", ["United States"], True),  # leading article dropped
        (" The Netherlands", ["Netherlands"], True),
        (" USA and Canada", ["United States", "USA"], True),  # an alias
        (" Bogota is", ["Bogotá"], True),  # accents
        (" Washington D.C. is", ["Washington, D.C."], True),
        (" Parisian food", ["Paris"], False),  # not a whole name
        (" the capital of France", ["Paris"], False),
        (" Euro", ["euro"], True),
        (" a city in France", ["France"], False),  # only a leading article is dropped
        ("", ["Paris"], False),
    ],
)
def test_whole_name_match(generated, aliases, expected):
    assert is_whole_name_match(generated, aliases) is expected


def test_normalisation_keeps_inner_articles():
    assert strip_article(normalize("The Valley of the Kings")) == "valley of the kings"
    assert strip_article(normalize("The")) == "the"


# ----------------------------------------------------------------------- configurations


def _parameters(project, env: str) -> dict:
    from kedro.config import OmegaConfigLoader

    return OmegaConfigLoader(str(project / "conf"), base_env="base", default_run_env=env)["parameters"]


def test_smollm2_configuration_builds_every_pipeline(kedro_project, monkeypatch):
    from kedro.framework.project import configure_project, pipelines

    from fkr_kedro.run_config import set_active_config_loader

    params = _parameters(kedro_project, "smollm2")
    assert as_source(params["base_model"]).kind == "gguf" and "dequantized" in params["base_model"]["description"]
    monkeypatch.setenv("KEDRO_ENV", "smollm2")
    set_active_config_loader(None)
    configure_project("fkr_kedro")
    nodes = {n.name for n in pipelines["__default__"].nodes}
    assert {"prepare_world_facts", "prepare_base_model", "measure_base_model", "gptq_w4_g32.quantize",
            "bnb_nf4.evaluate_recall", "tabulate_variants"} <= nodes
    assert "train_model" not in nodes and "fp.capture" in {n.name for n in pipelines["probe"].nodes}
    # SmolLM2's layer widths accept every variant of the configuration on this CPU.
    specs = [VariantSpec(name=k, **v) for k, v in params["variants"].items()]
    validate_variants(specs, [576, 1536], cuda_available=False)


def test_paper_configuration_resolves(kedro_project):
    params = _parameters(kedro_project, "paper")
    source = as_source(params["base_model"])
    assert (source.kind, source.id, source.device, source.trust_remote_code) == ("hub", "Qwen/Qwen2.5-7B", "cuda", False)
    assert params["knowledge"]["source"] == "lre_twohopfact"
    specs = [VariantSpec(name=k, **v) for k, v in params["variants"].items()]
    assert {s.name for s in specs} == {"fp", "bnb_int8", "bnb_nf4", "gptq_w8_g128", "gptq_w4_g128", "awq_w4_g128"}
    # Widths of Qwen2.5-7B (3584, 18944), Qwen2.5-14B (5120, 13824) and Llama 3 8B (4096, 14336).
    for widths in ([3584, 18944], [5120, 13824], [4096, 14336]):
        validate_variants(specs, widths, cuda_available=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the stop on a machine without a GPU")
def test_paper_run_stops_at_validation_without_a_gpu(kedro_project):
    from conftest import run_kedro

    with pytest.raises(ModelSourceError, match="no CUDA GPU is visible"):
        run_kedro(kedro_project, env="paper")
    assert not (kedro_project / "data" / "01_raw" / "TwoHopFact.csv").exists()  # nothing downloaded
