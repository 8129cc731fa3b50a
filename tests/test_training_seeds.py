"""Training seeds (``training_seeds``): the study once per trained model, each further seed in
its own namespace and folder; across seeds the report gives the mean change with its t
interval, whether each ranking holds in every seed, and the variance split into prompts,
calibration draws and seeds (fkr_kedro.analysis.seeds)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from kedro.framework.cli.utils import _split_params
from scipy import stats

from conftest import run_kedro
from fkr_kedro.analysis.seeds import seed_deltas, seed_rankings, seed_summary, variance_components
from fkr_kedro.parameters import ParameterError, validate_parameters
from fkr_kedro.run_config import StudyConfigLoader, seed_catalog, training_seed_namespaces

# `kedro run --params` as the shell passes it (kedro splits items at commas, so no commas).
TWO_SEEDS = _split_params(None, None, "training_seeds=[0 1]")


# ------------------------------------------------------------------ parameters and catalog
def test_training_seeds_parse_from_the_command_line_and_refuse_repeats_and_loaded_models():
    assert validate_parameters(TWO_SEEDS).training_seeds == [0, 1]
    assert validate_parameters({"training_seeds": None}).training_seeds is None
    with pytest.raises(ParameterError, match=r"training_seeds .*distinct training seeds"):
        validate_parameters({"training_seeds": [1, 1]})
    with pytest.raises(ParameterError, match=r"training_seeds .*base_model.kind: gguf.*set training_seeds: null"):
        validate_parameters({"training_seeds": [0, 1], "base_model": {"kind": "gguf", "path": "m.gguf"}})
    # A loaded model with one seed listed is still one model: allowed.
    validate_parameters({"training_seeds": [0], "base_model": {"kind": "gguf", "path": "m.gguf"}})


def test_the_seed_of_training_seed_keeps_the_study_names_and_the_others_get_namespaces():
    assert training_seed_namespaces(([0, 1, 2], 0)) == {1: "seed1", 2: "seed2"}
    assert training_seed_namespaces(([3, 0], 0)) == {3: "seed3"}
    assert training_seed_namespaces(([1, 2], 0)) == {1: "seed1", 2: "seed2"}  # training.seed not listed
    assert training_seed_namespaces((None, 0)) == {}


def test_a_seed_catalog_moves_every_output_but_the_shared_world():
    catalog = {
        "train_corpus": {"type": "text.TextDataset", "filepath": "data/x/05_model_input/train_corpus.txt"},
        "{variant}.model@variant": {"path": "data/x/06_models/variants/{variant}", "source": "data/x/06_models/base",
                                    "corpus": "data/x/05_model_input/train_corpus.txt"},
        "raw": {"filepath": "data/01_raw/TwoHopFact.csv"},
        "{variant}.one_hop_scores": {"filepath": "data/x/07_model_output/{variant}/s.parquet",
                                     "rebuild": "--pipeline=evaluate --namespaces={variant}"},
        "recall_by_variant": {"filepath": "data/x/08_reporting/r.csv", "rebuild": "--pipeline=evaluate"},
        "one_hop_prompts": {"filepath": "data/x/05_model_input/p.parquet", "rebuild": "--pipeline=data_prep"},
        "_anchor": {"type": "pandas.CSVDataset"},
    }
    moved = seed_catalog(catalog, "seed1", "data/x")
    assert moved["seed1.{variant}.model@variant"] == {
        "path": "data/x/seed1/06_models/variants/{variant}", "source": "data/x/seed1/06_models/base",
        "corpus": "data/x/05_model_input/train_corpus.txt",  # the world is shared by the seeds
    }
    assert moved["seed1.train_corpus"]["filepath"] == "data/x/05_model_input/train_corpus.txt"
    assert moved["seed1.raw"]["filepath"] == "data/01_raw/TwoHopFact.csv"
    assert "seed1._anchor" not in moved
    # Rebuild hints name the seed's own nodes; the shared world's stay as they are.
    assert moved["seed1.{variant}.one_hop_scores"]["rebuild"] == "--pipeline=evaluate --namespaces=seed1.{variant}"
    assert moved["seed1.recall_by_variant"]["rebuild"] == "--pipeline=evaluate --namespaces=seed1"
    assert moved["seed1.one_hop_prompts"]["rebuild"] == "--pipeline=data_prep"


def test_the_catalog_holds_each_seed_copy_only_when_seeds_are_configured(kedro_project):
    def catalog(params=None):
        return StudyConfigLoader(str(kedro_project / "conf"), env="test", base_env="base", default_run_env="local",
                                 runtime_params=params)["catalog"]

    assert not any(name.startswith("seed1.") for name in catalog())
    seeded = catalog(TWO_SEEDS)
    assert seeded["seed1.recall_by_variant"]["filepath"] == "data/test/seed1/08_reporting/recall_by_variant.csv"
    assert seeded["recall_by_variant"]["filepath"] == "data/test/08_reporting/recall_by_variant.csv"
    assert seeded["seed1.base_model@hf"]["path"] == "data/test/seed1/06_models/base"


# ------------------------------------------------------------------ across seeds, known answers
def _recall(seed: int, rows: list[tuple]) -> pd.DataFrame:
    """A recall table with the columns the evaluate pipeline writes: rows of (variant, group,
    method, bits, metric, value, delta, delta_stderr, p_holm, change)."""
    table = pd.DataFrame(rows, columns=["variant", "variant_group", "method", "bits", "metric", "value", "delta",
                                        "delta_stderr", "p_holm", "change"])
    table["relation"] = None
    table["calibration_seed"] = pd.NA
    table["ci_low"] = table["value"] - 0.01
    table["ci_high"] = table["value"] + 0.01
    table["delta_ci_low"] = table["delta"] - 0.02
    table["delta_ci_high"] = table["delta"] + 0.02
    reference = pd.DataFrame([{"variant": "fp", "variant_group": "fp", "method": "fp", "bits": None,
                               "metric": "one_hop.accuracy", "value": 0.9, "delta": np.nan, "relation": None}])
    return pd.concat([reference, table], ignore_index=True)


def test_the_mean_change_across_seeds_is_students_t_over_the_seeds_with_draws_averaged_first():
    m = "one_hop.accuracy"
    recalls = {
        0: _recall(0, [("q", "q", "gptq", 4, m, 0.8, -0.10, 0.01, 0.001, "loss"),
                       ("q_draw1", "q", "gptq", 4, m, 0.7, -0.20, 0.01, 0.001, "loss")]),
        1: _recall(1, [("q", "q", "gptq", 4, m, 0.8, -0.05, 0.01, 0.001, "loss"),
                       ("q_draw1", "q", "gptq", 4, m, 0.8, -0.05, 0.01, 0.001, "loss")]),
        2: _recall(2, [("q", "q", "gptq", 4, m, 0.9, -0.01, 0.01, 0.5, "noise"),
                       ("q_draw1", "q", "gptq", 4, m, 0.9, -0.03, 0.01, 0.001, "loss")]),
    }
    deltas = seed_deltas(recalls)
    assert len(deltas) == 6 and "fp" not in set(deltas["variant"])  # the reference compares nothing
    row = seed_summary(deltas, alpha=0.05).iloc[0]
    per_seed = np.array([-0.15, -0.05, -0.02])
    t = stats.ttest_1samp(per_seed, 0.0)
    interval = t.confidence_interval(0.95)
    assert row["delta_mean"] == pytest.approx(per_seed.mean())
    assert (row["delta_ci_low"], row["delta_ci_high"]) == pytest.approx((interval.low, interval.high))
    assert row["p_value"] == pytest.approx(t.pvalue) and row["p_holm"] == pytest.approx(t.pvalue)  # one variant
    assert row["seeds"] == 3 and row["draws"] == 2
    # Seed 2 has one draw within the noise: a loss in every draw of 2 seeds, not of all 3.
    assert row["seeds_with_loss"] == 2 and not row["loss_in_every_seed"]
    assert row["per_seed_delta"] == "0: -15.0; 1: -5.0; 2: -2.0"
    assert row["change"] == ("loss" if t.pvalue < 0.05 else "noise")


def _outcomes_and_deltas(changes: np.ndarray, group: str = "q") -> tuple[dict[int, pd.DataFrame], pd.DataFrame]:
    """``changes[s, d, p]``: the variant's outcome minus the reference's on prompt p in seed s,
    draw d, as each seed's prompt_outcomes (the reference all 0) and the seed_deltas rows
    (the delta and its paired standard error over the prompts)."""
    seeds, draws, prompts = changes.shape
    items = np.arange(prompts)
    outcomes, rows = {}, []
    for s in range(seeds):
        parts = [pd.DataFrame({"variant": "fp", "variant_group": "fp", "metric": "one_hop.accuracy", "item": items,
                               "value": 0.0})]
        for d in range(draws):
            parts.append(pd.DataFrame({"variant": f"{group}_draw{d}", "variant_group": group, "metric": "one_hop.accuracy",
                                       "item": items, "value": changes[s, d]}))
            rows.append({"training_seed": s, "variant_group": group, "method": "gptq", "bits": 4,
                         "metric": "one_hop.accuracy", "delta": changes[s, d].mean(),
                         "delta_stderr": changes[s, d].std(ddof=1) / np.sqrt(prompts), "change": "loss"})
        outcomes[s] = pd.concat(parts, ignore_index=True)
    return outcomes, pd.DataFrame(rows)


def test_variance_components_recover_the_spread_they_were_drawn_with():
    """x[s, d, p] = mu + prompt_p + a_s + b_sd + e_sdp, drawn with SDs 3 (seed) and 2 points
    (draw) over 300 seeds x 3 draws on 400 prompts that share a large effect (SD 50 points:
    the same prompt is lost in every seed and draw) and a per-condition noise of SD 20: the
    method of moments returns the variances 9e-4 and 4e-4 within sampling error. Subtracting
    the whole prompt noise of each delta (7.3e-4, the shared part included) instead would
    leave no calibration component at all."""
    rng = np.random.default_rng(0)
    seeds, draws, prompts = 300, 3, 400
    changes = (-0.05 + rng.normal(0, 0.5, prompts)[None, None, :] + rng.normal(0, 0.03, seeds)[:, None, None]
               + rng.normal(0, 0.02, (seeds, draws))[:, :, None] + rng.normal(0, 0.2, (seeds, draws, prompts)))
    outcomes, deltas = _outcomes_and_deltas(changes)
    row = variance_components(deltas, outcomes, "fp").iloc[0]
    assert row["prompts"] == pytest.approx((0.5 ** 2 + 0.2 ** 2) / prompts, rel=0.1)
    assert row["calibration"] == pytest.approx(4e-4, rel=0.15)
    assert row["seed"] == pytest.approx(9e-4, rel=0.2)
    assert row["share_prompts"] + row["share_calibration"] + row["share_seed"] == pytest.approx(1.0)
    assert row["delta_mean"] == pytest.approx(-0.05, abs=0.06)
    assert row["seeds"] == seeds and row["draws"] == draws
    assert row["calibration_ci_low"] < 4e-4 < row["calibration_ci_high"]
    assert row["seed_ci_low"] < 9e-4 < row["seed_ci_high"]


def test_the_seed_components_interval_covers_the_truth_95_times_in_100():
    """Three seeds, one draw, 100 prompts with a shared prompt effect: over 400 simulated
    studies the chi-square interval of the seed component holds its true value (25 squared
    points) in about 95% of them, and spans more than a factor of 10."""
    rng = np.random.default_rng(2)
    covered, ratios = 0, []
    for _ in range(400):
        changes = (rng.normal(0, 0.5, 100)[None, None, :] + rng.normal(0, 0.05, 3)[:, None, None]
                   + rng.normal(0, 0.2, (3, 1, 100)))
        outcomes, deltas = _outcomes_and_deltas(changes)
        row = variance_components(deltas, outcomes, "fp").iloc[0]
        covered += row["seed_ci_low"] <= 25e-4 <= row["seed_ci_high"]
        if row["seed_ci_low"] > 0:
            ratios.append(row["seed_ci_high"] / row["seed_ci_low"])
    assert 0.92 <= covered / 400 <= 0.98
    assert np.median(ratios) > 10


def test_variance_components_say_what_the_design_cannot_separate():
    """One draw a seed (a method without calibration): no calibration component; three seeds
    whose changes are the same prompts' values in another order (equal means): the seed
    component is 0, flagged as truncated. A seed whose outcomes lack the variant is an error
    that names the command."""
    rng = np.random.default_rng(1)
    base = rng.choice([-1.0, 0.0, 0.0, 0.0], 200)
    changes = np.stack([rng.permutation(base) for _ in range(3)])[:, None, :]
    outcomes, deltas = _outcomes_and_deltas(changes, group="r")
    row = variance_components(deltas, outcomes, "fp").iloc[0]
    assert math.isnan(row["calibration"]) and math.isnan(row["share_calibration"])
    assert row["seed"] == 0.0 and row["seed_truncated"]
    assert row["share_prompts"] == 1.0
    outcomes[2] = outcomes[2][outcomes[2]["variant_group"] != "r"]
    with pytest.raises(ValueError, match=r"training seed 2 lacks one_hop.accuracy of 'r'.*--namespaces=seed2"):
        variance_components(deltas, outcomes, "fp")


def test_a_ranking_holds_only_when_every_seed_ranks_the_same_side_above():
    def comparisons(delta_awq_vs_gptq: float, change: str) -> pd.DataFrame:
        return pd.DataFrame([{"bits": 4, "variant_a": "gptq", "variant_b": "awq", "metric": "one_hop.accuracy",
                              "relation": None, "delta": delta_awq_vs_gptq, "change": change}])

    held = seed_rankings({0: comparisons(0.1, "b > a"), 1: comparisons(0.2, "b > a")}, {})
    assert held.iloc[0]["holds_in_every_seed"] and held.iloc[0]["same_sign_in_every_seed"]
    assert held.iloc[0]["seeds_b_above_a"] == 2
    flipped = seed_rankings({0: comparisons(0.1, "b > a"), 1: comparisons(-0.02, "noise")}, {})
    assert not flipped.iloc[0]["holds_in_every_seed"] and not flipped.iloc[0]["same_sign_in_every_seed"]


def test_a_ranking_across_seeds_is_the_t_test_on_the_per_seed_differences_holm_adjusted_across_pairs():
    """Two pairs over three seeds: a consistent +10-12 points (b above a in every seed, though
    no seed's own test says so) and one that flips; Holm doubles the smaller p."""
    def seed(consistent: float, flipping: float) -> pd.DataFrame:
        return pd.DataFrame([
            {"bits": 3, "variant_a": "rtn", "variant_b": "hqq", "metric": "one_hop.accuracy", "relation": None,
             "delta": consistent, "change": "noise"},
            {"bits": 3, "variant_a": "rtn", "variant_b": "gptq_draw1", "metric": "one_hop.accuracy", "relation": None,
             "delta": flipping, "change": "noise"},
        ])

    table = seed_rankings({0: seed(0.10, 0.1), 1: seed(0.11, -0.1), 2: seed(0.12, 0.05)}, {"gptq_draw1": "gptq"})
    steady, mixed = table.iloc[0], table.iloc[1]
    assert (mixed["variant_b"], steady["seeds_b_above_a"]) == ("gptq", 0)  # the draw's group; no seed's test
    p_steady = stats.ttest_1samp([0.10, 0.11, 0.12], 0.0).pvalue
    p_mixed = stats.ttest_1samp([0.1, -0.1, 0.05], 0.0).pvalue
    assert steady["p_value"] == pytest.approx(p_steady) and steady["p_holm"] == pytest.approx(2 * p_steady)
    assert mixed["p_holm"] == pytest.approx(max(p_mixed, 2 * p_steady))
    assert (steady["change"], mixed["change"]) == ("b > a", "noise")
    assert steady["same_sign_in_every_seed"] and not steady["holds_in_every_seed"]
    # The same difference in every seed leaves the seeds' spread unmeasured: no test, no finding.
    same = seed_rankings({k: seed(-0.002, 0.1 * (-1) ** k) for k in range(3)}, {}).iloc[0]
    assert math.isnan(same["p_value"]) and same["change"] == "noise" and same["delta_mean"] == pytest.approx(-0.002)


# ------------------------------------------------------------------ the study with two seeds
@pytest.mark.slow
def test_two_training_seeds_run_the_study_twice_and_the_report_sets_them_side_by_side(kedro_project, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("FKR_MLFLOW_PARENT_RUN_ID", raising=False)
    run_kedro(kedro_project, None, env="test", params={**TWO_SEEDS, "training": {"steps": 40}})
    data = kedro_project / "data" / "test"
    main, seed1 = data / "06_models", data / "seed1" / "06_models"
    assert json.loads((main / "base_training.json").read_text())["training"]["seed"] == 0
    assert json.loads((seed1 / "base_training.json").read_text())["training"]["seed"] == 1
    assert (main / "base" / "model.safetensors").read_bytes() != (seed1 / "base" / "model.safetensors").read_bytes()
    assert not (data / "seed1" / "05_model_input").exists()  # the world and prompts are shared

    recalls = {seed: pd.read_csv(folder / "08_reporting" / "recall_by_variant.csv")
               for seed, folder in ((0, data), (1, data / "seed1"))}
    summary = pd.read_csv(data / "08_reporting" / "seed_summary.csv")
    assert set(summary["variant_group"]) == {"bnb_int8", "bnb_nf4", "gptq_w4_g32", "rtn_w2_g32"}  # conf/test's, but fp
    assert set(summary["seeds"]) == {2}
    for row in summary.itertuples():
        expected = np.mean([r.loc[(r["variant"] == row.variant_group) & (r["metric"] == row.metric)
                                  & r["relation"].isna(), "delta"].iloc[0] for r in recalls.values()])
        assert row.delta_mean == pytest.approx(expected)
    # Each seed's per-prompt outcomes hold what its recall table averages; the variance
    # components are computed from them.
    for seed, folder in ((0, data), (1, data / "seed1")):
        outcomes = pd.read_parquet(folder / "08_reporting" / "prompt_outcomes.parquet")
        means = outcomes.groupby(["variant", "metric"])["value"].mean()
        overall = recalls[seed][recalls[seed]["relation"].isna()].set_index(["variant", "metric"])["value"]
        assert len(means) == 2 * 5  # conf/test's five variants, fp included, two headline metrics
        for key, mean in means.items():
            assert overall[key] == pytest.approx(mean)
    components = pd.read_csv(data / "08_reporting" / "variance_components.csv")
    assert set(components["variant_group"]) == set(summary["variant_group"]) and (components["prompts"] >= 0).all()
    assert (data / "08_reporting" / "figures" / "seed_deltas.png").is_file()
    report = (data / "08_reporting" / "report.html").read_text()
    assert "<h2>Training seeds</h2>" in report and "across 2 training seeds" in report

    # MLflow: one nested run per variant of each trained model; a seed's study-level metrics
    # are its own keys on the parent run.
    client = mlflow.MlflowClient(f"sqlite:///{kedro_project / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    nested = {r.data.tags.get("mlflow.runName"): r for r in runs if "mlflow.parentRunId" in r.data.tags}
    assert {"gptq_w4_g32", "seed1.gptq_w4_g32", "seed1.fp"} <= set(nested)
    assert nested["seed1.gptq_w4_g32"].data.params["training_seed"] == "1"
    assert nested["gptq_w4_g32"].data.params["training_seed"] == "0"
    parent = next(r for r in runs if "mlflow.parentRunId" not in r.data.tags)
    assert "seed1.one_hop.accuracy" in parent.data.metrics and "one_hop.accuracy" in parent.data.metrics
    assert parent.data.metrics["seed1.one_hop.accuracy"] == pytest.approx(
        json.loads((data / "seed1" / "08_reporting" / "training_metrics.json").read_text())["one_hop.accuracy"])


def test_a_training_seed_tag_selects_that_seeds_whole_study(kedro_project):
    from kedro.framework.startup import bootstrap_project

    from fkr_kedro.pipeline_registry import register_pipelines
    from fkr_kedro.run_config import set_active_config_loader

    bootstrap_project(kedro_project)
    set_active_config_loader(StudyConfigLoader(str(kedro_project / "conf"), env="test", base_env="base",
                                               default_run_env="local", runtime_params=TWO_SEEDS))
    default = register_pipelines()["__default__"]
    one = default.only_nodes_with_tags("training_seed_1")
    assert {n.namespace.split(".")[0] for n in one.nodes} == {"seed1"}
    assert {"seed1.train_model", "seed1.gptq_w4_g32.quantize", "seed1.tabulate_variants"} <= {n.name for n in one.nodes}
    main = default.only_nodes_with_tags("training_seed_0")
    assert {"train_model", "gptq_w4_g32.quantize", "tabulate_variants"} <= {n.name for n in main.nodes}
    assert not any(n.name.startswith("seed1.") for n in main.nodes)
    # The comparison across seeds is the report's, in no seed's study.
    assert "compare_training_seeds" in {n.name for n in default.nodes} - {n.name for n in one.nodes + main.nodes}


def test_with_one_trained_model_the_report_says_what_is_not_measured():
    from fkr_kedro.modeling.load import ModelSource
    from fkr_kedro.pipelines.report.nodes import _seeds_section
    from fkr_kedro.reporting.findings import ReportSettings

    trained = _seeds_section(ModelSource(kind="train"), 3, None, None, None, None, ReportSettings())
    assert trained.title == "Training seeds" and not trained.tables
    assert trained.sentences[0].startswith("One trained model (training seed 3)")
    assert "training_seeds=[0 1 2]" in trained.sentences[0]
    loaded = _seeds_section(ModelSource(kind="gguf", path="m.gguf"), 0, None, None, None, None, ReportSettings())
    assert loaded.sentences[0].startswith("The base model is loaded (gguf): one trained model")


def test_a_seed_whose_slurm_task_failed_is_named_and_left_out_of_the_comparison(kedro_project, monkeypatch):
    from fkr_kedro.pipelines.report.pipeline import create_pipeline, missing_seeds
    from fkr_kedro.run_config import MISSING_NAMESPACES_ENV, set_active_config_loader, study_parameters

    set_active_config_loader(StudyConfigLoader(str(kedro_project / "conf"), env="test", base_env="base",
                                               default_run_env="local",
                                               runtime_params=_split_params(None, None, "training_seeds=[0 1 2]")))
    assert "compare_training_seeds" in {n.name for n in create_pipeline().nodes}
    monkeypatch.setenv(MISSING_NAMESPACES_ENV, "seed2 rtn_w2_g32")
    assert missing_seeds(study_parameters()) == ["seed2"]
    compare = next(n for n in create_pipeline().nodes if n.name == "compare_training_seeds")
    assert not any(i.startswith("seed2.") for i in compare.inputs) and "seed1.recall_by_variant" in compare.inputs
    monkeypatch.setenv(MISSING_NAMESPACES_ENV, "seed1 seed2")
    assert "compare_training_seeds" not in {n.name for n in create_pipeline().nodes}
