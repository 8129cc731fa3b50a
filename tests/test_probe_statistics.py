"""Intervals and paired tests of the probe pipeline's tables against ``report.reference``: known
answers on EntRec and CnstScore (a variant equal to the reference, one shifted on every
chain), the probe headline's log line, and a probe pipeline built and run with a reference
that is not ``fp``."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import PROJECT_ROOT
from fkr_kedro.analysis.capture import ActivationCache
from fkr_kedro.analysis.statistics import StatisticsSettings
from fkr_kedro.analysis.summaries import cnst_summary, entrec_summary, probe_headline
from fkr_kedro.reporting.findings import ReportSettings

SETTINGS = StatisticsSettings(bootstrap_resamples=500)
STATISTICS = ["ci_low", "ci_high", "stderr", "delta", "delta_ci_low", "delta_ci_high", "p_value", "p_holm"]


def chains(n: int = 60, layers: int = 2, offset: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """An EntRec table (one row per chain and layer, as ``entrec_table`` writes it): the
    chains of a seen and a held-out split, shifted by ``offset`` nats."""
    rng = np.random.default_rng(seed)
    values = rng.normal(-5.0, 2.0, size=(n, layers)) + offset
    return pd.DataFrame(
        {
            "row": np.repeat(np.arange(n), layers),
            "layer": np.tile(np.arange(layers), n),
            "entrec": values.ravel(),
            "split": np.repeat(np.where(np.arange(n) % 3 == 0, "held_out", "seen"), layers),
        }
    )


def by_key(table: pd.DataFrame) -> pd.DataFrame:
    return table.set_index(["variant", "split", "layer", "metric"])


def test_entrec_against_the_reference_known_answers():
    base = chains()
    noisy = base.assign(entrec=base["entrec"] + np.random.default_rng(5).normal(0, 0.01, len(base)))
    tables = {"base": base, "same": base.copy(), "lower": base.assign(entrec=base["entrec"] - 1.0), "noisy": noisy}
    table = entrec_summary(tables, reference="base", settings=SETTINGS)
    assert list(table.columns) == ["variant", "layer", "split", "metric", "value", *STATISTICS]
    rows = by_key(table)
    for split in ("all", "seen", "held_out"):
        for layer in (0, 1):
            same = rows.loc[("same", split, layer, "entrec_mean")]
            ref = rows.loc[("base", split, layer, "entrec_mean")]
            assert (same["delta"], same["delta_ci_low"], same["delta_ci_high"]) == (0, 0, 0)
            assert same["p_value"] == 1 and same["p_holm"] == 1
            assert same["ci_low"] < same["value"] < same["ci_high"]
            assert (same["ci_low"], same["ci_high"]) == (ref["ci_low"], ref["ci_high"])
            # One nat lower on every chain: delta -1 exactly, and a sure loss.
            lower = rows.loc[("lower", split, layer, "entrec_mean")]
            assert lower["delta"] == pytest.approx(-1.0)
            assert lower["delta_ci_low"] == pytest.approx(-1.0) and lower["delta_ci_high"] == pytest.approx(-1.0)
            assert lower["value"] == pytest.approx(ref["value"] - 1.0)
            assert lower["p_holm"] < 1e-3 and lower["p_holm"] >= lower["p_value"]
            # Noise of 0.01 nats around the reference: no change found.
            assert rows.loc[("noisy", split, layer, "entrec_mean"), "p_holm"] > 0.05
    # A family is one (layer, split) over the three variants.
    family = rows.xs(("all", 0, "entrec_mean"), level=("split", "layer", "metric"))
    assert family.loc["lower", "p_holm"] == pytest.approx(min(1.0, 3 * family.loc["lower", "p_value"]))
    assert rows.loc["base"]["p_value"].isna().all()  # nothing to compare the reference with
    assert table[table["metric"] == "entrec_median"][STATISTICS].isna().all().all()
    n_all = rows.loc[("base", "all", 0, "entrec_mean")]
    assert n_all["stderr"] == pytest.approx(base[base["layer"] == 0]["entrec"].std() / np.sqrt(60))


def test_entrec_pairs_chains_by_row_whatever_their_order():
    base = chains()
    shuffled = base.sample(frac=1.0, random_state=3).assign(entrec=lambda t: t["entrec"] + 0.5)
    rows = by_key(entrec_summary({"base": base, "later": shuffled}, settings=SETTINGS))  # first = reference
    later = rows.loc[("later", "all", 1, "entrec_mean")]
    assert later["delta"] == pytest.approx(0.5) and later["delta_ci_high"] == pytest.approx(0.5)


def cnst_cache(scores: np.ndarray, n_layers: int = 2) -> ActivationCache:
    """A cache holding only the per-chain CnstScore terms of ``scores``."""
    s = torch.tensor(scores, dtype=torch.float32)
    tensors = {
        "two_hop.cnst_score": s, "two_hop.xent_2h_1h": -s, "two_hop.xent_1h_2h": -s,
        "two_hop.entropy_2h": -0.5 * s, "two_hop.entropy_1h": -0.5 * s,
    }
    return ActivationCache(tensors=tensors, metadata={"n_layers": str(n_layers), "two_hop.prompts_sha256": "t"})


def test_cnst_score_against_the_reference_known_answers():
    rng = np.random.default_rng(0)
    scores = -rng.gamma(2.0, 1.0, size=90)
    two_hop = pd.DataFrame({"split": np.where(np.arange(90) % 2 == 0, "seen", "held_out")})
    caches = {"base": cnst_cache(scores), "same": cnst_cache(scores), "worse": cnst_cache(scores - 0.25)}
    table = cnst_summary(caches, two_hop, reference="base", settings=SETTINGS)
    assert list(table.columns) == ["variant", "layer", "split", "metric", "value", *STATISTICS]
    rows = by_key(table)
    for split in ("all", "seen", "held_out"):
        same, worse = rows.loc[("same", split, 2, "cnst_score")], rows.loc[("worse", split, 2, "cnst_score")]
        assert same["delta"] == 0 and same["p_value"] == 1 and same["p_holm"] == 1
        assert same["ci_low"] < same["value"] < same["ci_high"]
        assert worse["delta"] == pytest.approx(-0.25, abs=1e-6) and worse["delta_ci_high"] < 0
        assert worse["p_holm"] < 1e-3 and worse["p_holm"] >= worse["p_value"]
    # Only CnstScore carries statistics; its terms and the chain counts do not.
    others = table[table["metric"] != "cnst_score"]
    assert others[STATISTICS].isna().all().all()
    assert rows.loc[("base", "seen", 2, "n_chains"), "value"] == 45


def probe_caches(tag: str = "t"):
    """The subject probe's planted data (tests/test_probes.py) as one-hop caches: ``base`` the
    reference, ``copy`` the same cache, ``broken`` noise."""
    from test_probes import planted

    table, acts = planted()
    tokens = torch.tensor(table["object"].str[3:].astype(int).to_numpy())
    rng = np.random.default_rng(1)

    def cache(values) -> ActivationCache:
        return ActivationCache(
            tensors={"one_hop.resid_post.subject": torch.tensor(values, dtype=torch.float16),
                     "one_hop.answer_token": tokens},
            metadata={"one_hop.prompts_sha256": tag, "n_layers": "2"},
        )

    return table, {"base.activations": cache(acts), "copy.activations": cache(acts),
                   "broken.activations": cache(rng.normal(size=acts.shape))}


def test_the_probe_summary_logs_the_transfer_accuracy_with_its_interval(caplog):
    from fkr_kedro.analysis.probes import ProbeConfig
    from fkr_kedro.parameters import ProbeSettings
    from fkr_kedro.pipelines.probe.nodes import summarize_probes

    table, caches = probe_caches()
    report = ReportSettings(reference="base", bootstrap_resamples=200)
    probe = ProbeSettings(probes=ProbeConfig(test_size=0.3))
    with caplog.at_level(logging.INFO, logger="fkr_kedro.pipelines.probe.nodes"):
        results = summarize_probes(table, pd.DataFrame(), probe, report, **caches)
    assert set(results["probe"]) == {"subject"}
    headline = probe_headline(results, "subject", "base")
    assert {"transfer_ci_low", "transfer_ci_high", "transfer_delta", "transfer_p_holm"} <= set(headline.columns)
    assert np.isnan(headline.loc["base", "transfer_delta"]) and headline.loc["copy", "transfer_delta"] == 0
    assert headline.loc["broken", "transfer_delta"] < 0 and headline.loc["broken", "transfer_p_holm"] < 0.05
    logged = caplog.text
    assert "subject probe vs chance and shuffled control" in logged
    layer = headline.attrs["reference_layer"]
    row = headline.loc["broken"]
    assert (f"broken: best layer {int(row.best_layer)}" in logged
            and f"base probe at layer {layer}: {row.transfer_accuracy:.3f} "
                f"[95% CI {row.transfer_ci_low:.3f}-{row.transfer_ci_high:.3f}], "
                f"{row.transfer_delta:+.3f} vs base (Holm p" in logged)


# ----------------------------------------------------------------- the pipeline's reference


@pytest.fixture
def test_configuration(monkeypatch):
    """Builds pipelines from ./conf in the ``test`` environment with the given ``--params``."""
    from kedro.config import OmegaConfigLoader

    from fkr_kedro.run_config import set_active_config_loader

    monkeypatch.chdir(PROJECT_ROOT)

    def configure(params: dict | None = None) -> None:
        set_active_config_loader(
            OmegaConfigLoader(
                str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="test", runtime_params=params
            )
        )

    yield configure
    set_active_config_loader(None)


def run(pipeline, **inputs) -> dict:
    from kedro.io import DataCatalog
    from kedro.runner import SequentialRunner

    catalog = DataCatalog()
    for name, value in inputs.items():
        catalog[name] = value
    return {name: dataset.load() for name, dataset in SequentialRunner().run(pipeline, catalog).items()}


def test_a_reference_other_than_fp_leads_the_probe_pipeline_and_its_tables(test_configuration):
    from fkr_kedro.pipelines.probe import create_pipeline
    from fkr_kedro.run_config import active_reference, active_variants

    test_configuration({"report": {"reference": "bnb_int8"}})
    assert active_reference() == "bnb_int8"
    names = [spec.name for spec in active_variants()]
    assert names[0] == "fp" and "bnb_int8" in names
    pipeline = create_pipeline()
    summaries = {node.name: node for node in pipeline.nodes if node.name.startswith("summarize_")}
    assert len(summaries) == 5
    for node in summaries.values():
        assert "params:report" in node.inputs
        per_variant = [name for name in node.inputs if name.endswith((".activations", ".entrec", ".attribution"))]
        assert per_variant[0].startswith("bnb_int8."), node.inputs  # the reference first

    # Run the EntRec and CnstScore summaries as the pipeline wires them: bnb_int8 is the
    # reference, fp (one nat / 0.25 lower on every chain) is compared against it.
    rng = np.random.default_rng(0)
    scores = -rng.gamma(2.0, 1.0, size=45)
    two_hop = pd.DataFrame({"split": np.where(np.arange(45) % 3 == 0, "held_out", "seen")})
    report = ReportSettings(reference="bnb_int8", bootstrap_resamples=200)
    inputs = {"params:report": report, "two_hop_prompts": two_hop}
    for name in names:
        lower = name == "fp"
        inputs[f"{name}.entrec"] = chains(45, offset=-1.0 if lower else 0.0)
        inputs[f"{name}.activations"] = cnst_cache(scores - (0.25 if lower else 0.0))
    out = run(pipeline.only_nodes("summarize_entrec", "summarize_cnst"), **inputs)
    entrec = by_key(out["entrec_results"])
    assert entrec.index.get_level_values("variant")[0] == "bnb_int8"
    assert entrec.loc["bnb_int8"]["delta"].isna().all()
    assert entrec.loc[("fp", "all", 1, "entrec_mean"), "delta"] == pytest.approx(-1.0)
    assert entrec.loc[("bnb_nf4", "all", 1, "entrec_mean"), "delta"] == 0
    cnst = by_key(out["cnst_results"])
    assert cnst.loc["bnb_int8"]["delta"].isna().all()
    assert cnst.loc[("fp", "all", 2, "cnst_score"), "delta"] == pytest.approx(-0.25, abs=1e-6)
    assert cnst.loc[("fp", "all", 2, "cnst_score"), "p_holm"] < 0.05


def test_a_reference_that_is_not_a_variant_names_both_fixes(test_configuration):
    from fkr_kedro.pipelines.probe import create_pipeline
    from fkr_kedro.pipelines.probe.pipeline import MissingReferenceError

    test_configuration({"report": {"reference": "fp16"}})
    with pytest.raises(MissingReferenceError) as error:
        create_pipeline()
    message = str(error.value)
    assert "'fp16'" in message and "`report.reference`" in message
    assert "add the variant 'fp16' under `variants:`" in message
    assert "set `report.reference` to one of the variants" in message and "'bnb_int8'" in message
