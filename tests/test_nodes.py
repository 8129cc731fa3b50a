"""Pipelines run on an in-memory DataCatalog with the SequentialRunner (as in Kedro's
spaceflights starter): each test feeds a pipeline, or a slice of one, small inputs whose
outputs are known."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from kedro.io import DataCatalog
from kedro.runner import SequentialRunner

from conftest import PROJECT_ROOT


@pytest.fixture
def base_configuration(monkeypatch):
    """Pipelines built from ./conf (the embedded default's variants, conf/base/parameters_quantize.yml),
    as `kedro run` does."""
    from kedro.framework.project import configure_project

    from fkr_kedro.run_config import set_active_config_loader

    monkeypatch.chdir(PROJECT_ROOT)
    set_active_config_loader(None)
    configure_project("fkr_kedro")


def run(pipeline, **inputs) -> dict:
    catalog = DataCatalog()
    for name, value in inputs.items():
        catalog[name] = value
    return {name: dataset.load() for name, dataset in SequentialRunner().run(pipeline, catalog).items()}


def test_data_prep_samples_at_most_the_configured_rows_per_group(base_configuration, tiny_world):
    from fkr_kedro.knowledge.world import WorldConfig
    from fkr_kedro.parameters import EvaluationSample
    from fkr_kedro.pipelines.data_prep import create_pipeline

    world = WorldConfig(
        n_people=60, n_cities=10, n_countries=4, n_continents=3, n_companies=6, n_landmarks=8,
        n_first_names=12, n_last_names=12, n_place_parts=16,
    )
    out = run(
        create_pipeline(),
        **{"params:world": world, "params:evaluation_sample": EvaluationSample(max_per_relation=5, max_per_composition=3)},
    )
    one_hop, two_hop, summary = out["one_hop_prompts"], out["two_hop_prompts"], out["world_summary"]
    # tiny_world is the same world: 5 facts of each relation, all 4 of country_continent.
    expected = {relation: min(5, len(facts)) for relation, facts in tiny_world.facts.items()}
    assert one_hop.groupby("relation").size().to_dict() == expected and expected["country_continent"] == 4
    assert two_hop.groupby(["composition", "split"]).size().max() == 3
    assert summary["evaluation_prompts"] == {"one_hop": len(one_hop), "two_hop": len(two_hop)}
    assert summary["one_hop_facts"] == sum(len(f) for f in tiny_world.facts.values())
    assert len(out["train_corpus"].splitlines()) == summary["corpus_statements"] == len(tiny_world.corpus())


def test_recall_table_is_built_from_named_inputs_in_the_configured_order(base_configuration):
    from fkr_kedro.pipelines.evaluate import create_pipeline
    from fkr_kedro.run_config import active_variants

    from fkr_kedro.reporting.findings import ReportSettings

    specs = active_variants()
    # As many variants as the parameters list (the default's count changes as variants are added).
    configured = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_quantize.yml").read_text())["variants"]
    assert [spec.name for spec in specs] == list(configured)
    inputs = {"params:report": ReportSettings(bootstrap_resamples=100)}
    for i, spec in enumerate(specs):
        inputs[f"{spec.name}.recall_metrics"] = {
            "one_hop.accuracy": i / 100, "one_hop.accuracy.birth_city": i / 50, "two_hop.held_out.accuracy": 0.5,
        }
        inputs[f"{spec.name}.footprint"] = {"effective_bits": float(spec.bits or 32)}
        inputs[f"{spec.name}.knowledge_bits"] = {"stored_bits": 100.0 - i, "stored_bits.birth_city": 60.0 - i}
        # Two facts and one held-out chain: every variant right on the first fact only.
        inputs[f"{spec.name}.one_hop_scores"] = pd.DataFrame({
            "relation": ["birth_city"] * 2, "subject": ["s0", "s1"], "object": ["o", "o"], "correct": [True, False],
            "answer_logprob": [-0.1, -2.0]})
        inputs[f"{spec.name}.two_hop_scores"] = pd.DataFrame({
            "composition": ["c"], "e1": ["e"], "e2": ["b"], "e3": ["t"], "split": ["held_out"], "readout": ["r2(r1(e1))"],
            "correct": [True], "answer_logprob": [-0.5]})
    out = run(create_pipeline().only_nodes("tabulate_variants"), **inputs)
    table = out["recall_by_variant"]

    assert list(table["variant"].drop_duplicates()) == [spec.name for spec in specs]
    assert len(table) == 6 * len(specs)
    # Identical scores: no difference from the reference, and every same-bits pair compared.
    compared = table[(table["metric"] == "one_hop.accuracy") & table["relation"].isna() & (table["variant"] != "fp")]
    assert (compared["p_value"] == 1.0).all() and (compared["change"] == "noise").all()
    pairs = out["variant_comparisons"]
    four_bit = [s.name for s in specs if s.bits == 4]
    assert len(pairs[pairs["metric"] == "one_hop.accuracy"].query("bits == 4")) >= len(four_bit) * (len(four_bit) - 1) // 2
    row = table[(table["variant"] == "gptq_w3_g32") & (table["relation"] == "birth_city")].iloc[0]
    index = [spec.name for spec in specs].index("gptq_w3_g32")
    assert (row["metric"], row["value"], row["method"], row["bits"], row["group_size"]) == (
        "one_hop.accuracy", pytest.approx(index / 50), "gptq", 3, 32,
    )
    bits = table[table["metric"] == "effective_bits"].set_index("variant")["value"]
    assert bits["fp"] == 32 and bits["rtn_w2_g32"] == 2
    stored = table[(table["metric"] == "stored_bits") & (table["variant"] == "gptq_w3_g32")]
    assert stored["value"].tolist() == [100.0 - index, 60.0 - index]
    assert stored["relation"].isna().tolist() == [True, False] and stored["relation"].iloc[1] == "birth_city"


def test_entrec_summary_averages_each_split_and_all_chains(base_configuration):
    from fkr_kedro.pipelines.probe import create_pipeline
    from fkr_kedro.run_config import active_variants

    def chains(offset: float) -> pd.DataFrame:
        # Two layers, three chains: two seen, one held out.
        return pd.DataFrame(
            {
                "row": [0, 0, 1, 1, 2, 2],
                "layer": [0, 1, 0, 1, 0, 1],
                "entrec": [offset - 1, offset - 2, offset - 3, offset - 4, offset - 8, offset - 9],
                "split": ["seen", "seen", "seen", "seen", "held_out", "held_out"],
            }
        )

    names = [spec.name for spec in active_variants()]
    from fkr_kedro.reporting.findings import ReportSettings

    inputs = {f"{name}.entrec": chains(float(i)) for i, name in enumerate(["fp"] + [n for n in names if n != "fp"])}
    inputs["params:report"] = ReportSettings(bootstrap_resamples=100)
    table = run(create_pipeline().only_nodes("summarize_entrec"), **inputs)["entrec_results"]

    fp = table[table["variant"] == "fp"].set_index(["split", "layer", "metric"])["value"]
    assert fp[("all", 0, "entrec_mean")] == pytest.approx(-4.0)  # (-1 - 3 - 8) / 3
    assert fp[("all", 1, "entrec_median")] == pytest.approx(-4.0)  # median of -2, -4, -9
    assert fp[("seen", 0, "entrec_mean")] == pytest.approx(-2.0)
    assert fp[("held_out", 1, "entrec_mean")] == pytest.approx(-9.0)
    second = table["variant"].drop_duplicates().iloc[1]
    shifted = table[table["variant"] == second].set_index(["split", "layer", "metric"])["value"]
    assert shifted[("all", 0, "entrec_mean")] == pytest.approx(-3.0)  # offset 1
    assert list(table["variant"].drop_duplicates())[0] == "fp"


def test_bound_nodes_state_their_own_signature_so_kedro_converts_their_parameters(base_configuration):
    """A node built with run_config.bind maps its inputs onto its own arguments: Kedro's
    params: type conversion (validation.TypeExtractor) finds ReportSettings for the evaluate
    pipeline alone (run with --pipelines=...,evaluate it got a dict before)."""
    from kedro.validation import TypeExtractor

    from fkr_kedro.pipelines.evaluate import create_pipeline
    from fkr_kedro.reporting.findings import ReportSettings

    types = TypeExtractor({"evaluate": create_pipeline()}).extract_types_from_pipelines()
    assert types["report"] is ReportSettings
