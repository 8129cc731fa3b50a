"""Calibration draws (``quantize.calibration_seeds``): each calibrated variant once per draw,
each draw its own namespace with its seed in spec and fingerprint; a rerun keeps every
draw; the report gives the spread across draws beside the prompt interval."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from kedro.framework.cli.utils import _split_params
from safetensors.torch import load_file

from fkr_kedro.analysis.comparisons import recall_table
from fkr_kedro.analysis.statistics import StatisticsSettings
from fkr_kedro.datasets.hf_model import HFModelDataset
from fkr_kedro.pipelines.report.nodes import _draws_section
from fkr_kedro.quantization import api
from fkr_kedro.quantization.methods import METHODS
from fkr_kedro.quantization.variants import VariantSpec
from fkr_kedro.reporting.findings import draw_spread_sentences, draw_spread_table
from fkr_kedro.reporting.tables import draw_spread
from test_fingerprint import WORDS, _tiny_lm

# `kedro run --params` as the shell passes it (kedro splits items at commas, so no commas).
TWO_DRAWS = _split_params(None, None, "quantize.calibration_seeds=[0 1]")


@pytest.fixture
def study(kedro_project):
    """The test configuration with a tiny base model and its corpus already written (the
    quantize pipeline's inputs), so only quantization runs."""
    from kedro.framework.startup import bootstrap_project

    HFModelDataset(str(kedro_project / "data/test/06_models/base")).save(_tiny_lm())
    corpus = kedro_project / "data/test/05_model_input/train_corpus.txt"
    corpus.parent.mkdir(parents=True)
    corpus.write_text("".join(f"the capital of {w} is {w}\n" for w in WORDS * 8))
    bootstrap_project(kedro_project)
    return kedro_project


def test_draws_are_namespaces_of_the_calibrated_methods_only(study):
    from kedro.framework.project import pipelines
    from kedro.framework.session import KedroSession

    from fkr_kedro.run_config import active_variants

    assert TWO_DRAWS == {"quantize": {"calibration_seeds": ["0 1"]}}
    with KedroSession.create(project_path=study, env="test", runtime_params=TWO_DRAWS) as session:
        session.load_context()
        specs = active_variants()
        assert [s.name for s in specs] == [
            "fp", "bnb_int8", "bnb_nf4", "gptq_w4_g32", "gptq_w4_g32_draw1", "rtn_w2_g32",
        ]
        draws = {s.name: (s.calibration_seed, s.variant_group) for s in specs if METHODS[s.method].calibrated}
        assert draws == {"gptq_w4_g32": (0, "gptq_w4_g32"), "gptq_w4_g32_draw1": (1, "gptq_w4_g32")}
        assert all(s.calibration_seed is None for s in specs if not METHODS[s.method].calibrated)
        # Every pipeline built from the variants holds the draw's namespace.
        for name in ("quantize", "evaluate", "probe", "report"):
            nodes = {n.name for n in pipelines[name].nodes}
            assert any("gptq_w4_g32_draw1." in n for n in nodes), name
            assert not any("rtn_w2_g32_draw" in n or "bnb_int8_draw" in n for n in nodes), name
    with KedroSession.create(project_path=study, env="test") as session:  # the default: one draw
        session.load_context()
        assert [s.name for s in active_variants()] == ["fp", "bnb_int8", "bnb_nf4", "gptq_w4_g32", "rtn_w2_g32"]


def test_two_draws_differ_and_a_rerun_keeps_both(study, monkeypatch):
    """The quantize pipeline on the two draws' namespaces writes two different GPTQ variants;
    run again, the fingerprint keep-check keeps both (nothing quantized)."""
    from kedro.framework.session import KedroSession

    draws = ["gptq_w4_g32", "gptq_w4_g32_draw1"]
    variants = study / "data/test/06_models/variants"

    def run() -> None:
        with KedroSession.create(project_path=study, env="test", runtime_params=TWO_DRAWS) as session:
            session.run(pipeline_names=["quantize"], namespaces=draws)

    run()
    first, second = (load_file(variants / name / "model.safetensors") for name in draws)
    qweights = [key for key in first if key.endswith("qweight")]
    assert qweights and any(not first[key].equal(second[key]) for key in qweights)
    recorded = [api.recorded_fingerprint(variants / name) for name in draws]
    assert recorded[0]["calibration_sha256"] != recorded[1]["calibration_sha256"]
    assert "calibration_seed" not in recorded[0] and recorded[1]["calibration_seed"] == 1  # seed 0: as before draws
    assert recorded[1]["name"] == "gptq_w4_g32_draw1"

    written, kept = [], []
    monkeypatch.setattr(api, "_write_variant", lambda *args: written.append(args))
    keep = api.quantize_or_keep
    monkeypatch.setattr(api, "quantize_or_keep", lambda *a, **k: kept.append(r := keep(*a, **k)) or r)
    monkeypatch.setattr("fkr_kedro.pipelines.quantize.nodes.quantize_or_keep", api.quantize_or_keep)
    run()
    assert written == [] and [r.kept for r in kept] == [True, True]
    assert [api.recorded_fingerprint(variants / name) for name in draws] == recorded


def test_the_report_gives_the_spread_across_draws_beside_the_prompt_interval():
    """Known answers: draws of gptq at 80% and 90% one-hop recall of 400 facts (range 10
    points, SD 7.07, wider than a 95% Wilson interval's ~3.5-point half-width); rtn, one
    draw, has no spread row."""
    specs = [VariantSpec(name="fp", method="fp"), VariantSpec(name="rtn", method="rtn", bits=4, group_size=32)]
    gptq = VariantSpec(name="g", method="gptq", bits=4, group_size=32)
    specs += [gptq.model_copy(update={"name": n, "calibration_seed": s, "draw": d})
              for n, s, d in (("g", 0, 0), ("g_draw1", 7, 1))]
    right = {"fp": 360, "rtn": 300, "g": 320, "g_draw1": 360}
    values = {v: {"one_hop.accuracy": pd.Series(np.arange(400) < k, dtype=float)} for v, k in right.items()}
    metrics = {v: {"one_hop.accuracy": k / 400} for v, k in right.items()}
    table = recall_table(specs, metrics, {v: {} for v in right}, values, "fp", StatisticsSettings(bootstrap_resamples=100))
    assert table.set_index("variant")["variant_group"].to_dict() == {"fp": "fp", "rtn": "rtn", "g": "g", "g_draw1": "g"}
    seeds = table.drop_duplicates("variant").set_index("variant")["calibration_seed"]
    assert str(seeds.dtype) == "Int64" and seeds.isna().to_dict() == {"fp": True, "rtn": True, "g": False, "g_draw1": False}
    assert (seeds["g"], seeds["g_draw1"]) == (0, 7)
    assert table.set_index("variant").loc["g_draw1", "change"] == "noise"  # its own paired test against fp

    spread = draw_spread(table)
    assert len(spread) == 1
    row = spread.iloc[0]
    assert (row["variant_group"], row["metric"], row["draws"], row["seeds"]) == ("g", "one_hop.accuracy", 2, "0, 7")
    assert row["min"] == pytest.approx(0.8) and row["max"] == pytest.approx(0.9)
    assert row["range"] == pytest.approx(0.1) and row["sd"] == pytest.approx(0.1 / np.sqrt(2))
    assert 0.025 < row["ci_half_width"] < 0.045
    shown = draw_spread_table(spread)
    assert shown.loc[("g", "one-hop recall"), "range"] == pytest.approx(0.1)
    # Cochran's Q on the same 400 prompts: the 40 prompts on which the draws disagree all go
    # one way (k = 2: McNemar's chi-square without correction, 40 on 1 df).
    assert row["draws_p_holm"] == pytest.approx(stats.chi2.sf(40, 1))
    assert table.set_index("variant").loc[["fp", "rtn"], "draws_p_value"].isna().all()
    [sentence] = draw_spread_sentences(spread, 0.05)
    assert "the draws differ for g (2 draws, 80.0-90.0%, Holm p = 2.5e-10)" in sentence
    same = draw_spread(table.assign(draws_p_holm=0.4))
    assert "within the noise for g" in draw_spread_sentences(same, 0.05)[0]
    [section] = _draws_section(table, 0.05)  # the report's table
    [(caption, html)] = section.tables
    cells = pd.read_html(io.StringIO(html))[0].iloc[0].astype(str).tolist()
    assert section.title == "Calibration draws" and "95% CI" in caption
    assert cells[:8] == ["g", "one-hop recall", "2", "0, 7", "80.0%", "90.0%", "10.0%", "7.1%"]

    one_draw = draw_spread(table[table["variant"] != "g_draw1"])
    assert one_draw.empty and draw_spread_sentences(one_draw, 0.05) == []
    assert _draws_section(table[table["variant"] != "g_draw1"], 0.05) == []


def test_seeds_are_checked_and_a_variant_may_fix_its_own():
    from fkr_kedro.parameters import ParameterError, validate_parameters
    from fkr_kedro.quantization.variants import VariantError, expand_draws, validate_variants

    own = VariantSpec(name="g7", method="gptq", bits=4, group_size=32, calibration_seed=7)
    plain = VariantSpec(name="a", method="awq", bits=4, group_size=32)
    expanded = expand_draws([own, plain], [3, 4, 5])
    assert [(s.name, s.calibration_seed, s.variant_group) for s in expanded] == [
        ("g7", 7, "g7"), ("a", 3, "a"), ("a_draw1", 4, "a"), ("a_draw2", 5, "a"),
    ]
    assert validate_variants(expanded, [64, 128]) == expanded
    with pytest.raises(VariantError, match="method rtn takes no calibration_seed option"):
        validate_variants([VariantSpec(name="r", method="rtn", bits=4, group_size=32, calibration_seed=1)], [64])
    with pytest.raises(ParameterError, match=r"quantize\.calibration_seeds.*repeat one"):
        validate_parameters({"quantize": {"calibration_seeds": [1, 1]}})
    with pytest.raises(ParameterError, match=r"calibration_seeds: \[2\]"):
        validate_parameters({"quantize": {"calibration_seed": 2}})  # the setting before draws existed


def test_draws_of_one_variant_are_not_compared_as_a_pair_of_methods():
    """variant_comparisons pairs methods at the same bits; two draws of one variant are not a
    pair (their spread is the draw table's), each draw is still compared with the other method."""
    from fkr_kedro.analysis.comparisons import variant_comparisons

    specs = [
        VariantSpec(name="gptq_w4_g32", method="gptq", bits=4, group_size=32, calibration_seed=0, draw=0),
        VariantSpec(name="gptq_w4_g32_draw1", method="gptq", bits=4, group_size=32, calibration_seed=1, draw=1),
        VariantSpec(name="rtn_w4_g32", method="rtn", bits=4, group_size=32),
    ]
    correct = {name: pd.Series([1.0, 0.0, 1.0, 1.0]) for name in ("gptq_w4_g32", "gptq_w4_g32_draw1", "rtn_w4_g32")}
    values = {name: {"one_hop.accuracy": series} for name, series in correct.items()}
    pairs = variant_comparisons(specs, values, StatisticsSettings(bootstrap_resamples=200))
    assert sorted(zip(pairs["variant_a"], pairs["variant_b"])) == [
        ("gptq_w4_g32", "rtn_w4_g32"), ("gptq_w4_g32_draw1", "rtn_w4_g32"),
    ]
