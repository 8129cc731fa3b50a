"""The probe pipeline end to end on the tiny ``test`` configuration."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import yaml
from kedro.io import DatasetError

from conftest import TEST_DATA, run_kedro

VARIANTS = {"fp", "bnb_int8", "bnb_nf4", "gptq_w4_g32", "rtn_w2_g32"}
PROBES = {"subject", "bridge", "answer", "answer_two_hop"}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _layers_per_variant(table: pd.DataFrame, by: list[str]) -> pd.Series:
    return table.groupby(["variant", *by])["layer"].nunique()


@pytest.mark.slow
def test_probe_pipeline_runs_on_every_variant(tracked_study):
    """On the outputs of the one `kedro run --env=test` of the suite (tests/tracked_study.py)."""
    kedro_project = tracked_study.project
    # One activation cache (and attribution file) per variant, as safetensors; no pickles.
    for variant in VARIANTS:
        folder = kedro_project / TEST_DATA / "07_model_output" / variant
        for name in ("activations.safetensors", "attribution.safetensors", "entrec.parquet"):
            assert (folder / name).is_file(), f"{variant}: {name} missing"
        assert not list(folder.glob(".*.tmp")), "a temporary file was left behind"
    data = kedro_project / TEST_DATA
    assert not [p for p in data.rglob("*") if p.suffix in (".pkl", ".pickle")]
    from fkr_kedro.analysis.capture import ActivationCache

    cache = ActivationCache.load(kedro_project / TEST_DATA / "07_model_output/bnb_nf4/activations.safetensors")
    assert cache.metadata["model"] == "bnb_nf4"
    n_layers1 = cache.n_layers + 1  # layer 0 = embeddings
    assert cache["two_hop.resid_post.mention"].shape[1] == n_layers1

    reporting = data / "08_reporting"
    tables = {
        name: pd.read_csv(reporting / f"{name}_results.csv")
        for name in ("probe", "drift", "cnst", "entrec", "attribution")
    }
    for name, table in tables.items():
        assert {"variant", "layer", "metric", "value"} <= set(table.columns), name
        assert set(table["variant"]) == VARIANTS, name

    # Every variant has a row per layer for every probe, drift site and readout.
    probes = tables["probe"]
    assert set(probes["probe"]) == PROBES
    per_variant = probes[probes["metric"].isin(["accuracy", "transfer_accuracy"])]
    counts = _layers_per_variant(per_variant, ["probe", "metric"])
    assert len(counts) == len(VARIANTS) * len(PROBES) * 2 and (counts == n_layers1).all()
    drift = tables["drift"]
    assert (_layers_per_variant(drift, ["site", "metric"]) == n_layers1).all()
    assert len(drift.groupby(["variant", "site", "metric"])) == len(VARIANTS) * drift["site"].nunique() * 2
    fp_drift = drift[drift["variant"] == "fp"]
    assert fp_drift[fp_drift["metric"] == "cosine"]["value"].to_numpy() == pytest.approx(1.0, abs=1e-4)
    # CKA is undefined (NaN) where every prompt has the same vector (the embedding of a last
    # token shared by all prompts); elsewhere fp against itself is 1.
    fp_cka = fp_drift[fp_drift["metric"] == "cka"]["value"].dropna()
    assert len(fp_cka) and fp_cka.to_numpy() == pytest.approx(1.0, abs=1e-4)
    entrec = tables["entrec"]
    assert (_layers_per_variant(entrec[entrec["split"] == "all"], ["metric"]) == n_layers1).all()
    attribution = tables["attribution"]
    assert (_layers_per_variant(attribution, ["metric"]) == cache.n_layers).all()
    assert len(attribution.groupby(["variant", "metric"])) == len(VARIANTS) * 6
    cnst = tables["cnst"]
    cnst_all = cnst[(cnst["split"] == "all") & (cnst["metric"] == "cnst_score")].set_index("variant")["value"]
    assert set(cnst_all.index) == VARIANTS and (cnst_all <= 0).all()  # CnstScore is at most 0

    # The fp probes report accuracy beside a chance rate, and the shuffled-label control
    # stays near chance (within 2x).
    fp = probes[probes["variant"] == "fp"].pivot_table(index=["probe", "layer"], columns="metric", values="value")
    for probe in ("bridge", "subject"):
        rows = fp.loc[probe]
        assert {"accuracy", "chance", "control_accuracy", "transfer_accuracy"} <= set(rows.columns)
        assert ((rows["chance"] > 0) & (rows["chance"] < 1)).all()
        assert (rows["control_accuracy"] <= 2 * rows["chance"]).all(), rows
    # Each accuracy lies in its cluster-bootstrap interval; the counts and chance have none.
    accuracies = probes[probes["metric"].isin(["accuracy", "transfer_accuracy", "control_accuracy"])]
    assert ((accuracies["ci_low"] <= accuracies["value"]) & (accuracies["value"] <= accuracies["ci_high"])).all()
    assert probes[probes["metric"].isin(["chance", "n_train", "n_test", "n_classes"])]["ci_low"].isna().all()
    # The bridge probe at the last layer, refitted here from the stored caches with sklearn
    # (the probe config of the test env, the same entity split): its transfer accuracy on every
    # variant and each delta against fp are those of the table; fp has no delta.
    transfer = probes[probes["metric"] == "transfer_accuracy"].set_index(["variant", "probe", "layer"])
    expected = _refit_bridge_probe(kedro_project, n_layers1 - 1)
    last = transfer.xs(("bridge", n_layers1 - 1), level=("probe", "layer"))
    assert last["value"].to_dict() == pytest.approx(expected)
    others = last.drop(index="fp")
    assert others["delta"].to_dict() == pytest.approx({v: expected[v] - expected["fp"] for v in others.index})
    assert transfer.loc["fp", ["delta", "p_value", "p_holm"]].isna().all().all()
    others = transfer.drop(index="fp", level="variant")
    assert ((others["delta_ci_low"] <= others["delta"]) & (others["delta"] <= others["delta_ci_high"])).all()
    assert ((others["p_holm"] >= others["p_value"]) & (others["p_holm"] <= 1)).all()
    # EntRec, CnstScore, drift and attribution carry intervals too.
    assert tables["entrec"].query("metric == 'entrec_mean'")["ci_low"].notna().any()
    assert tables["cnst"].query("metric == 'cnst_score' and variant != 'fp'")["p_holm"].notna().all()
    assert tables["drift"].dropna(subset=["value"])["ci_low"].notna().all()
    assert tables["attribution"]["ci_low"].notna().all()
    # The headline the probe node logs (analysis.summaries.probe_headline): each variant's best
    # layer is where its own bridge probe peaks, and fp's probe's transfer accuracy, interval
    # and delta are the table's at fp's best layer.
    from fkr_kedro.analysis.summaries import probe_headline

    headline = probe_headline(probes, "bridge", "fp")
    own = probes[(probes["probe"] == "bridge") & (probes["metric"] == "accuracy")]
    peaks = own.loc[own.groupby("variant")["value"].idxmax()].set_index("variant")["layer"]
    assert headline["best_layer"].to_dict() == peaks.to_dict()
    assert headline.attrs["reference_layer"] == peaks["fp"]
    at_best = transfer.xs(("bridge", peaks["fp"]), level=("probe", "layer"))
    assert headline["transfer_accuracy"].to_dict() == pytest.approx(at_best["value"].to_dict())
    assert headline["transfer_ci_low"].to_dict() == pytest.approx(at_best["ci_low"].to_dict())
    assert headline["transfer_delta"].drop("fp").to_dict() == pytest.approx(at_best["delta"].drop("fp").to_dict())


def _refit_bridge_probe(project, layer: int) -> dict[str, float]:
    """The bridge probe (two-hop prompts, label e2, entities e1) trained on fp's residual at
    the bridge's mention and applied to every variant, by hand: the accuracy per variant."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupShuffleSplit
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from fkr_kedro.analysis.capture import ActivationCache

    config = yaml.safe_load((project / "conf/test/parameters_probe.yml").read_text())["probe"]["probes"]
    table = pd.read_parquet(project / TEST_DATA / "05_model_input/two_hop_prompts.parquet").reset_index(drop=True)
    labels = table["e2"].astype(str)
    rows = np.flatnonzero((labels.map(labels.value_counts()) >= 2).to_numpy())  # classes of one row dropped
    assert len(rows) <= config["max_rows"]  # no subsampling to replicate
    y, groups = labels.to_numpy()[rows], table["e1"].astype(str).to_numpy()[rows]
    split = GroupShuffleSplit(n_splits=1, test_size=config["test_size"], random_state=config["seed"])
    train, test = next(split.split(np.zeros(len(rows)), groups=groups))
    X = {
        v: ActivationCache.load(project / TEST_DATA / f"07_model_output/{v}/activations.safetensors")
        .layer("two_hop.resid_post.mention", layer)[rows].float().numpy()
        for v in VARIANTS
    }
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=config["max_iter"]))
    probe.fit(X["fp"][train], y[train])
    return {v: float((probe.predict(x[test]) == y[test]).mean()) for v, x in X.items()}


def test_probe_before_quantize_names_the_missing_step(kedro_project):
    with pytest.raises(DatasetError) as error:
        run_kedro(kedro_project, pipeline="probe")
    # Nothing exists yet: one message names the whole chain that produces the inputs.
    assert "(data_prep -> train -> quantize)" in "".join(_messages(error.value))


def test_probe_pipeline_needs_the_fp_reference(kedro_project):
    params = kedro_project / "conf/test/parameters.yml"
    data = yaml.safe_load(params.read_text())
    del data["variants"]["fp"]
    params.write_text(yaml.safe_dump(data))
    from fkr_kedro.pipelines.probe.pipeline import MissingReferenceError

    with pytest.raises(MissingReferenceError, match=r"compares every variant against the reference 'fp'") as error:
        run_kedro(kedro_project, pipeline="probe")
    message = "".join(_messages(error.value))
    assert "'fp'" in message and "fp: {method: fp}" in message
    # Both fixes: add the variant, or compare against another one.
    assert "`report.reference`" in message and "set `report.reference` to one of the variants" in message


def _messages(error: BaseException) -> list[str]:
    """The messages of an exception and of its causes."""
    out = []
    while error is not None:
        out.append(str(error))
        error = error.__cause__ or error.__context__
    return out
