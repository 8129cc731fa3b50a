"""The scaling pipeline end to end on the test configuration (two tiny sizes, a handful of
GPTQ points), and a second run that reads every point from the cache."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest

from conftest import TEST_DATA, run_kedro


def test_scaling_is_not_part_of_the_default_run(monkeypatch):
    from kedro.framework.project import configure_project, pipelines

    from conftest import PROJECT_ROOT
    from fkr_kedro.run_config import set_active_config_loader

    monkeypatch.chdir(PROJECT_ROOT)
    set_active_config_loader(None)
    configure_project("fkr_kedro")
    scaling = {n.name for n in pipelines["scaling"].nodes}
    assert {"fit_scaling_laws", "generate_scaling_world", "scaling_d2w32.train_scaling_model", "scaling_d4w64m512.sweep_points"} <= scaling
    default = {n.name for n in pipelines["__default__"].nodes}
    assert not {n for n in scaling if "scaling" in n} & default


@pytest.mark.slow
def test_scaling_pipeline_split_by_size_then_resumed(kedro_project):
    """Shared inputs first, then each size in its own run (as separate processes would), then
    the whole pipeline, which must train nothing and compute no point."""
    started = int(time.time() * 1000)
    run_kedro(kedro_project, pipeline="scaling", node_names=["generate_scaling_world", "build_in_context_task"])
    for size in ("scaling_l1", "scaling_l2"):
        run_kedro(kedro_project, pipeline="scaling", namespaces=[size])
    cached = sorted((kedro_project / TEST_DATA / "07_model_output/scaling").glob("*/points/*.json"))
    assert len(cached) == 2 * 6  # fp + 5 GPTQ points per size
    before = {p: p.stat().st_mtime_ns for p in cached}
    models = sorted((kedro_project / TEST_DATA / "06_models/scaling").glob("*/model.safetensors"))
    model_mtimes = [m.stat().st_mtime_ns for m in models]
    assert len(models) == 2

    run_kedro(kedro_project, pipeline="scaling")
    assert {p: p.stat().st_mtime_ns for p in cached} == before
    assert [m.stat().st_mtime_ns for m in models] == model_mtimes

    reporting = kedro_project / TEST_DATA / "08_reporting"
    points = pd.read_csv(reporting / "scaling_points.csv")
    assert len(points) == 2 * 6 * 3  # 2 sizes x 6 points x 3 tasks
    assert set(points["task"]) == {"km", "ku_two_hop", "ku_in_context"}
    assert set(points["bits"].dropna()) == {2, 3, 8}
    assert set(points["group_size"].dropna()) == {16, 32} and set(points["calibration_size"].dropna()) == {8, 32}
    assert (points.loc[points["method"] == "fp", "b_eff"] == 32).all()
    gptq = points[points["method"] == "gptq"]
    assert (gptq["b_eff"] > gptq["bits"]).all()  # per-group scales and zero points cost bits
    assert not points.loc[points["bits"] == 2, "in_fit"].any()
    assert points.groupby("model")["n_params"].nunique().eq(1).all()
    assert points.groupby("model")["n_params"].first().is_monotonic_increasing

    metrics = json.loads((reporting / "scaling_fit_metrics.json").read_text())
    # Memorization is fitted on every point but the two 2-bit ones; the tiny models never
    # compose, so both utilization tasks sit at chance and are reported, not fitted.
    assert (metrics["km.fitted"], metrics["km.points_in_fit"], metrics["km.excluded_bits"]) == (1.0, 8, 2)
    for task in ("ku_two_hop", "ku_in_context"):
        assert (metrics[f"{task}.fitted"], metrics[f"{task}.points_in_fit"]) == (0.0, 0)
        assert metrics[f"{task}.excluded_at_or_below_chance"] == 8
    for task in ("km", "ku_two_hop", "ku_in_context"):
        assert metrics[f"{task}.points"] == 10
        counted = sum(
            metrics[f"{task}.{k}"]
            for k in ("points_in_fit", "excluded_at_or_below_chance", "excluded_perfect", "excluded_bits",
                      "excluded_reference_near_chance")
        )
        assert counted == metrics[f"{task}.points"]
    conclusion = json.loads((reporting / "scaling_conclusion.json").read_text())
    assert conclusion["reference_task"] == "km" and conclusion["statements"]
    exponents = pd.read_csv(reporting / "scaling_exponents.csv")
    assert list(exponents.columns[:5]) == ["task", "factor", "factor_name", "estimate", "ci_low"]
    assert (reporting / "scaling_predicted_vs_observed.png").stat().st_size > 10_000
    # Two sizes: leaving one out leaves N constant, so no size can be predicted (reported).
    assert metrics["km.loso_sizes_not_fitted"] == 2
    # Each size's training curve, and its summary.
    training = pd.read_csv(reporting / "scaling_training.csv")
    assert list(training["model"]) == ["l1", "l2"] and (training["steps"] == 300).all()
    assert training["exposures_per_fact"].gt(0).all() and training["loss_drop_last_fifth"].notna().all()
    assert (reporting / "scaling_training_curves.png").stat().st_size > 10_000

    # One size rerun alone: only its missing point is computed, the other size is untouched.
    lost = kedro_project / TEST_DATA / "07_model_output/scaling/scaling_l2/points/gptq_w3_g16_c32.json"
    lost.unlink()
    run_kedro(kedro_project, pipeline="scaling", namespaces=["scaling_l2"])
    assert lost.exists()
    assert {p: p.stat().st_mtime_ns for p in cached if p != lost} == {p: t for p, t in before.items() if p != lost}
    assert [m.stat().st_mtime_ns for m in models] == model_mtimes

    # The study's MLflow runs are named after what the sweep trains, not after the default study.
    import mlflow

    client = mlflow.MlflowClient(mlflow.get_tracking_uri())  # the store kedro-mlflow set for the runs
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    names = {r.info.run_name for r in runs if r.info.start_time >= started and r.data.tags.get("pipeline") == "scaling"}
    assert names == {"scaling test: 2 sizes trained from scratch (l1, l2) on synthetic world (seed 0, 200 people), 6 variants"}


def test_scaling_pipeline_trains_every_size_once_per_seed(kedro_project):
    """Two seeds: a namespace per (size, seed), models trained with their own seed, points
    tagged with it, and the fit's sizes counted once (seeds are resampled within sizes)."""
    started = int(time.time() * 1000)
    sweep = {"bits": [3], "group_sizes": [32], "calibration_sizes": [32], "group_size_bits": [], "calibration_bits": []}
    run_kedro(kedro_project, pipeline="scaling", params={"scaling": {"seeds": [0, 1], "sweep": sweep}})
    trained = {p.parent.name: json.loads(p.read_text())["fingerprint"]["training"]["seed"]
               for p in (kedro_project / TEST_DATA / "06_models/scaling").glob("*/training.json")}
    assert trained == {"scaling_l1": 0, "scaling_l1_seed1": 1, "scaling_l2": 0, "scaling_l2_seed1": 1}
    weights = {ns: (kedro_project / TEST_DATA / f"06_models/scaling/{ns}/model.safetensors").read_bytes() for ns in trained}
    assert weights["scaling_l1"] != weights["scaling_l1_seed1"]  # another initialisation and batch order

    reporting = kedro_project / TEST_DATA / "08_reporting"
    points = pd.read_csv(reporting / "scaling_points.csv")
    assert len(points) == 2 * 2 * 2 * 3  # 2 sizes x 2 seeds x (fp + 1 point) x 3 tasks
    assert points.groupby(["model", "seed"]).size().to_dict() == {(m, s): 6 for m in ("l1", "l2") for s in (0, 1)}
    metrics = json.loads((reporting / "scaling_fit_metrics.json").read_text())
    assert metrics["km.points"] == 4 and metrics["km.sizes_in_fit"] == 2
    training = pd.read_csv(reporting / "scaling_training.csv")
    assert list(zip(training["model"], training["seed"])) == [("l1", 0), ("l1", 1), ("l2", 0), ("l2", 1)]
    import mlflow

    client = mlflow.MlflowClient(mlflow.get_tracking_uri())
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert {r.info.run_name for r in runs if r.info.start_time >= started and r.data.tags.get("pipeline") == "scaling"} == {
        "scaling test: 2 sizes trained from scratch (l1, l2), seeds 0, 1 on synthetic world (seed 0, 200 people), 2 variants"
    }
