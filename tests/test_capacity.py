"""The capacity study: a resumed sweep computes only missing points; the saturation table
and conclusion follow from known curves; the pipeline runs end to end on the test config."""

import shutil

import pandas as pd
import pytest

from conftest import TEST_DATA
from fkr_kedro.capacity.config import CapacitySettings
from fkr_kedro.capacity.study import (
    capacity_conclusion,
    default_load_sentences,
    run_capacity,
    saturation_table,
)

TINY = {
    "sizes": {
        "a": {"hidden_size": 64, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "max_position_embeddings": 32},
        "b": {"hidden_size": 64, "num_layers": 1, "num_heads": 2, "intermediate_size": 128, "max_position_embeddings": 32},
    },
    "people": [10, 20],
    "world": {"n_people": 10, "n_cities": 8, "n_countries": 4, "n_continents": 2, "n_companies": 6, "n_landmarks": 8,
              "n_first_names": 10, "n_last_names": 10, "n_place_parts": 10},
    "exposures": [5],
    "training": {"batch_size": 32, "learning_rate": 0.01, "warmup_steps": 2, "log_every": 50},
    "variants": {"fp": {"method": "fp"}, "bnb_int8": {"method": "bnb_int8"}},
    "device": "cpu",
}


def test_a_resumed_sweep_computes_only_missing_points(tmp_path):
    settings = CapacitySettings(**TINY)
    models, cache = tmp_path / "models", tmp_path / "cache"
    only_a, done = run_capacity(settings, models, cache, progress=False, sizes=["a"])  # one size's namespace
    assert sorted(done["computed"]) == ["a_p10_e5/bnb_int8", "a_p10_e5/fp", "a_p20_e5/bnb_int8", "a_p20_e5/fp"]
    assert set(only_a["size"]) == {"a"}
    first, done = run_capacity(settings, models, cache, progress=False)
    assert len(done["computed"]) == 4 and len(done["reused"]) == 4 and set(first["size"]) == {"a", "b"}
    assert set(first["variant"]) == {"fp", "bnb_int8"} and len(first) == 8
    again, done = run_capacity(settings, models, cache, progress=False)
    assert done["computed"] == [] and len(done["reused"]) == 8
    pd.testing.assert_frame_equal(first, again)
    (cache / "b_p20_e5" / "bnb_int8.json").unlink()
    shutil.rmtree(cache / "a_p10_e5")
    _, done = run_capacity(settings, models, cache, progress=False)
    assert sorted(done["computed"]) == ["a_p10_e5/bnb_int8", "a_p10_e5/fp", "b_p20_e5/bnb_int8"]


def _points(curves: dict[str, list[float]], loads=(100.0, 200.0, 400.0), weights=1000) -> pd.DataFrame:
    rows = []
    for variant, stored in curves.items():
        method = {"fp": "fp", "int8": "bnb_int8", "nf4": "bnb_nf4"}[variant]
        for people, (load, bits) in enumerate(zip(loads, stored)):
            rows.append({"exposures": 100.0, "size": "s", "people": people, "variant": variant, "method": method,
                         "bits": None, "b_eff": {"fp": 32, "int8": 8.5, "nf4": 4.7}[variant], "load_bits": load,
                         "stored_bits": bits, "quantized_weights": weights})
    return pd.DataFrame(rows)


def test_saturation_and_conclusion_follow_the_curves():
    points = _points({"fp": [100, 180, 190], "int8": [99, 178, 189], "nf4": [90, 120, 95]})
    table = saturation_table(points).set_index("variant")
    assert table.loc["fp", "bits_per_param"] == pytest.approx(0.19)
    assert bool(table.loc["fp", "fp_flattened"])  # 190 < 1.1 * 180
    assert bool(table.loc["int8", "within_5pct_every_load"]) and not bool(table.loc["nf4", "within_5pct_every_load"])
    assert table.loc["nf4", "kept_vs_fp"] == pytest.approx(120 / 190)
    statements = capacity_conclusion(saturation_table(points))["statements"]
    assert "curve flattens" in statements[0] and "int8 is within 5%" in statements[1] and "98.9% to 99.5%" in statements[1]
    assert "nf4 (4.70 bits) keeps 63.2%" in statements[2]
    rising = saturation_table(_points({"fp": [100, 150, 300]})).set_index("variant")
    assert not bool(rising.loc["fp", "fp_flattened"])


def test_the_default_load_is_set_beside_the_four_bit_capacity():
    saturation = saturation_table(_points({"fp": [100, 180, 190], "nf4": [90, 120, 95]}))
    recall = pd.DataFrame([
        {"variant": "fp", "metric": "quantized_weights", "relation": None, "value": 2000.0},
        {"variant": "fp", "metric": "stored_bits", "relation": None, "value": 150.0},
    ])
    lines = default_load_sentences({"knowledge_bits": 200.0}, recall, saturation)
    assert "200 bits, 0.100 bits per weight" in lines[0] and "fp stores 150 of them (75.0%)" in lines[0]
    # nf4 keeps 120 bits over 1,000 weights: 0.12 bits/param; the default's 0.1 is 0.83 times that.
    assert "keep 0.120 bits per parameter" in lines[1] and "0.83 times that: below" in lines[1]
    # Two sizes: "s" saturates, "t" does not and holds the lowest 4-bit figure: that figure is
    # only a lower bound of t's capacity, whatever s did.
    t = _points({"fp": [100, 150, 300], "nf4": [90, 100, 110]}).assign(size="t")
    both = saturation_table(pd.concat([_points({"fp": [100, 180, 190], "nf4": [90, 120, 95]}), t]))
    lines = default_load_sentences({"knowledge_bits": 200.0}, recall, both)
    assert "keep at least 0.110 bits per parameter" in lines[1] and "nf4 on t; full precision not yet saturated" in lines[1]


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="at least two increasing loads"):
        CapacitySettings(**{**TINY, "people": [20, 10]})
    with pytest.raises(ValueError, match="raise the name pools"):
        CapacitySettings(**{**TINY, "people": [10, 1000]})


@pytest.mark.slow
def test_the_capacity_pipeline_runs_and_the_report_shows_it(kedro_project):
    """`kedro run --pipeline=capacity` on the test configuration, then the report section
    with the curves and the bits-per-parameter table (no other pipeline's tables needed
    beyond what the report reads: the test study is run first)."""
    from conftest import run_kedro

    # One size in its own run (its namespace, as a Slurm task would), then the whole pipeline,
    # which reuses that size's models and points.
    run_kedro(kedro_project, pipeline="capacity", namespaces=["capacity_a"])
    assert (kedro_project / TEST_DATA / "07_model_output/capacity/capacity_a/points.csv").exists()
    assert not (kedro_project / TEST_DATA / "08_reporting/capacity_points.csv").exists()
    a_points = sorted(p.name for p in (kedro_project / TEST_DATA / "07_model_output/capacity/points").iterdir())
    assert a_points == ["a_p20_e20", "a_p60_e20"]
    stamp = {p: p.stat().st_mtime_ns for p in (kedro_project / TEST_DATA / "07_model_output/capacity/points").rglob("*.json")}
    run_kedro(kedro_project, pipeline="capacity")
    assert all(p.stat().st_mtime_ns == t for p, t in stamp.items())  # size a's points were read, not recomputed
    saturation = pd.read_csv(kedro_project / TEST_DATA / "08_reporting/capacity_saturation.csv")
    assert set(saturation["variant"]) == {"fp", "bnb_int8", "rtn_w4_g32", "gptq_w3_g32"}
    assert set(saturation["size"]) == {"a", "b"} and (kedro_project / TEST_DATA / "08_reporting/capacity_curves.png").exists()
    points = pd.read_csv(kedro_project / TEST_DATA / "08_reporting/capacity_points.csv")
    assert len(points) == 2 * 2 * 4 and (points["stored_bits"] <= points["load_bits"] + 1e-6).all()
