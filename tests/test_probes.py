"""Linear probes: entity-held-out splits, a real probe far above chance on planted signal, the
shuffled-label control at chance, transfer of the reference probe to other variants, and the
accuracies' cluster-bootstrap intervals and paired tests against the reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from fkr_kedro.analysis.capture import ActivationCache
from fkr_kedro.analysis.probes import (
    COLUMNS,
    DEFAULT_PROBES,
    ProbeConfig,
    ProbeSpec,
    clustered_accuracy,
    entity_split,
    run_probe,
    run_probes,
    shuffle_labels,
)
from fkr_kedro.analysis.statistics import StatisticsSettings, proportion


def chance_rates(results: pd.DataFrame) -> pd.Series:
    """The chance rate (majority class of the test split) of each probe in a results table."""
    return results[results["metric"] == "chance"].groupby("probe")["value"].first()


SPEC = ProbeSpec("subject", "one_hop.resid_post.subject", "one_hop", "object", "subject", "relation")


def planted(n_subjects=240, n_classes=6, d=16, seed=0):
    """Each subject appears in two relations; its vector carries its object's class mean at
    layer 1 (strongly) and layer 2 (weakly); layer 0 is noise."""
    rng = np.random.default_rng(seed)
    objects = [f"obj{c}" for c in range(n_classes)]
    rows = []
    for s in range(n_subjects):
        for rel in ("r1", "r2"):
            rows.append({"relation": rel, "subject": f"s{s}", "object": objects[rng.integers(n_classes)]})
    table = pd.DataFrame(rows)
    means = rng.normal(size=(n_classes, d)) * 3
    cls = table["object"].str[3:].astype(int).to_numpy()
    n = len(table)
    acts = np.stack(
        [rng.normal(size=(n, d)), means[cls] + rng.normal(size=(n, d)), 0.3 * means[cls] + rng.normal(size=(n, d))], axis=1
    )
    return table, acts


def cache_of(acts, tag="t") -> ActivationCache:
    return ActivationCache(
        tensors={SPEC.site: torch.tensor(acts, dtype=torch.float16)}, metadata={"one_hop.prompts_sha256": tag, "n_layers": "2"}
    )


def test_entity_split_keeps_groups_apart():
    groups = np.repeat(np.arange(50), 3)
    train, test = entity_split(groups, 0.3, seed=1)
    assert set(groups[train]).isdisjoint(groups[test])
    assert len(train) + len(test) == len(groups)


def test_shuffle_within_strata_keeps_label_counts_per_stratum():
    y = np.array(list("aabbccddee"))
    strata = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    out = shuffle_labels(y, strata, seed=0)
    for s in (0, 1):
        assert sorted(out[strata == s]) == sorted(y[strata == s])


def test_real_probe_far_above_chance_and_control_at_chance():
    table, acts = planted()
    rng = np.random.default_rng(1)
    caches = {
        "fp": cache_of(acts),
        "close": cache_of(acts + 0.1 * rng.normal(size=acts.shape)),  # mild drift
        "broken": cache_of(rng.normal(size=acts.shape)),  # nothing left
    }
    res = run_probe(SPEC, caches, table, reference="fp", config=ProbeConfig(test_size=0.3))
    assert list(res.columns) == COLUMNS
    assert COLUMNS[:5] == ["variant", "layer", "probe", "metric", "value"]
    v = res.set_index(["variant", "layer", "metric"])["value"]
    chance = chance_rates(res)["subject"]
    assert 1 / 6 <= chance < 0.35
    assert v["fp", 1, "accuracy"] > 0.9 > chance + 0.5
    assert v["fp", 2, "accuracy"] > chance + 0.2
    assert abs(v["fp", 0, "accuracy"] - chance) < 0.15  # noise layer
    for layer in (0, 1, 2):
        assert abs(v["fp", layer, "control_accuracy"] - chance) < 0.15
    assert v["close", 1, "transfer_accuracy"] > 0.85
    assert abs(v["broken", 1, "transfer_accuracy"] - chance) < 0.15
    assert abs(v["broken", 1, "accuracy"] - chance) < 0.15
    assert v["fp", 1, "transfer_accuracy"] == v["fp", 1, "accuracy"]
    assert v["fp", 1, "n_test"] + v["fp", 1, "n_train"] == len(table)


@pytest.fixture(scope="module")
def compared():
    """The planted probe with a variant whose cache IS the reference's, one with mild drift and
    one whose noise destroys the signal; the reference is named ``base``, not ``fp``."""
    table, acts = planted()
    rng = np.random.default_rng(1)
    caches = {
        "base": cache_of(acts),
        "same": cache_of(acts),
        "close": cache_of(acts + 0.1 * rng.normal(size=acts.shape)),
        "broken": cache_of(rng.normal(size=acts.shape)),
    }
    res = run_probe(SPEC, caches, table, reference="base", config=ProbeConfig(test_size=0.3),
                    settings=StatisticsSettings(bootstrap_resamples=500))
    return res.set_index(["variant", "layer", "metric"])


def test_a_variant_with_the_references_cache_has_no_change(compared):
    for metric in ("transfer_accuracy", "accuracy"):
        for layer in (0, 1, 2):
            row = compared.loc[("same", layer, metric)]
            assert row["delta"] == 0 and row["delta_ci_low"] == 0 and row["delta_ci_high"] == 0
            assert row["p_value"] == 1 and row["p_holm"] == 1
            # The same interval as the reference's (the same rows, clusters and seed).
            ref = compared.loc[("base", layer, metric)]
            assert (row["ci_low"], row["ci_high"], row["value"]) == (ref["ci_low"], ref["ci_high"], ref["value"])


def test_noise_that_destroys_the_signal_is_a_significant_transfer_loss(compared):
    row = compared.loc[("broken", 1, "transfer_accuracy")]
    ref = compared.loc[("base", 1, "transfer_accuracy")]
    assert row["delta"] == pytest.approx(row["value"] - ref["value"])
    assert row["delta"] < -0.6 and row["delta_ci_high"] < 0
    assert row["p_holm"] < 1e-6
    # Mild drift keeps the reference probe's accuracy: no significant change.
    assert compared.loc[("close", 1, "transfer_accuracy"), "p_holm"] > 0.05
    # On the noise layer nothing is lost: the reference probe was at chance already.
    assert compared.loc[("broken", 0, "transfer_accuracy"), "p_holm"] > 0.05


def test_intervals_contain_the_value_and_holm_never_lowers_a_p_value(compared):
    accuracies = compared[compared.index.get_level_values("metric").str.contains("accuracy")]
    assert accuracies["ci_low"].notna().all() and accuracies["stderr"].notna().all()
    assert ((accuracies["ci_low"] <= accuracies["value"]) & (accuracies["value"] <= accuracies["ci_high"])).all()
    tested = compared.dropna(subset=["p_value"])
    assert len(tested) == 3 * 3 * 2  # three variants, three layers, transfer and own accuracy
    assert (tested["p_holm"] >= tested["p_value"]).all() and (tested["p_holm"] <= 1).all()
    # A family is one (layer, metric) over the variants: with a sure loss beside two
    # p-values of 1, Holm multiplies the smallest by 3.
    family = tested.xs((1, "transfer_accuracy"), level=("layer", "metric"))
    assert family.loc["broken", "p_holm"] == pytest.approx(min(1.0, 3 * family.loc["broken", "p_value"]))
    # Nothing to compare: the reference's rows, chance and the counts.
    assert compared.loc["base"]["p_value"].isna().all()
    counts = compared[compared.index.get_level_values("metric").isin(["chance", "n_train", "n_test", "n_classes"])]
    assert counts[["ci_low", "ci_high", "stderr", "delta", "p_value", "p_holm"]].isna().all().all()


def test_the_accuracy_interval_resamples_whole_entities():
    """Rows of one entity that are all right or all wrong carry one entity's information: the
    cluster interval is as wide as a proportion over the entities, not over the rows."""
    settings = StatisticsSettings(bootstrap_resamples=2000)
    correct = np.repeat(np.arange(40) % 2 == 0, 10)  # 40 entities of 10 rows, half right
    clusters = np.repeat(np.arange(40), 10)
    clustered = clustered_accuracy(correct, clusters, settings)
    by_entity = proportion(np.arange(40) % 2 == 0, settings)
    by_row = proportion(correct, settings)
    assert clustered.value == 0.5 and clustered.n == 40
    width = clustered.ci_high - clustered.ci_low
    assert width == pytest.approx(by_entity.ci_high - by_entity.ci_low, rel=0.25)
    assert width > 2.5 * (by_row.ci_high - by_row.ci_low)
    # Independent rows (one per entity): the cluster interval is the row interval.
    single = clustered_accuracy(correct, np.arange(400), settings)
    assert single.ci_high - single.ci_low == pytest.approx(by_row.ci_high - by_row.ci_low, rel=0.25)


def test_misaligned_caches_are_refused():
    table, acts = planted(n_subjects=30)
    with pytest.raises(ValueError, match="differ"):
        run_probe(SPEC, {"fp": cache_of(acts, "a"), "q": cache_of(acts, "b")}, table)


def test_run_probes_on_captured_activations():
    """The default probes run end to end on caches captured from a tiny model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from fkr_kedro.analysis.capture import CaptureConfig, capture_activations
    from fkr_kedro.knowledge.world import WorldConfig, generate_world
    from fkr_kedro.modeling.tokenizer import build_word_tokenizer

    world = generate_world(
        WorldConfig(n_people=60, n_cities=6, n_countries=3, n_continents=2, n_companies=4, n_landmarks=6,
                    n_first_names=12, n_last_names=12, n_place_parts=16)
    )
    one, two = world.one_hop_table(), world.two_hop_table()
    tok = build_word_tokenizer(world.corpus())
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2, pad_token_id=tok.pad_token_id)).eval()
    cache = capture_activations(model, tok, one, two, CaptureConfig(batch_size=64, max_act_prompts=0, progress=False))
    res = run_probes({"fp": cache, "copy": cache}, {"one_hop": one, "two_hop": two}, config=ProbeConfig(layers=(0, 2)))
    assert set(res["probe"]) == {p.name for p in DEFAULT_PROBES}
    assert set(res["layer"]) == {0, 2}
    assert res["value"].notna().all()
