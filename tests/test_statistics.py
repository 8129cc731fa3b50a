"""Intervals, paired tests and the sentences that follow them, on tables with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from fkr_kedro.analysis import statistics
from fkr_kedro.analysis.comparisons import PromptMismatchError, check_same_prompts, recall_table, variant_comparisons
from fkr_kedro.analysis.recall import prompt_values
from fkr_kedro.quantization.variants import VariantSpec
from fkr_kedro.reporting.findings import ReportSettings, findings
from fkr_kedro.reporting.tables import StudyTables

SETTINGS = statistics.StatisticsSettings(bootstrap_resamples=500)


def correct(n: int, right: int, offset: int = 0) -> np.ndarray:
    """``n`` prompts, ``right`` of them correct, starting at row ``offset`` (wrapping)."""
    out = np.zeros(n, dtype=bool)
    out[(np.arange(right) + offset) % n] = True
    return out


def test_wilson_interval_matches_the_textbook_formula():
    est = statistics.proportion(correct(100, 90))
    z = 1.959963984540054
    p, n = 0.9, 100
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    assert (est.value, est.n) == (0.9, 100)
    assert est.ci_low == pytest.approx(centre - half) and est.ci_high == pytest.approx(centre + half)
    assert est.stderr == pytest.approx(np.std(correct(100, 90), ddof=1) / 10)
    # A perfect score still has an interval below 1.
    perfect = statistics.proportion(correct(50, 50))
    assert perfect.ci_high == 1.0 and 0.9 < perfect.ci_low < 1.0


def test_mcnemar_is_the_exact_binomial_test_on_the_discordant_prompts():
    reference = correct(625, 200)
    variant = reference.copy()
    variant[:38] = False  # 38 prompts lost (of the first 200, all right for the reference) ...
    variant[300:328] = True  # ... and 28 gained
    comparison = statistics.paired(reference, variant, SETTINGS)
    assert (comparison.gained, comparison.lost, comparison.n) == (28, 38, 625)
    assert comparison.p_value == pytest.approx(binomtest(28, 66, 0.5).pvalue)
    assert comparison.p_value == pytest.approx(0.27, abs=0.005)  # the GPTQ w4 vs RTN w4 figure
    assert comparison.delta == pytest.approx(-10 / 625)
    assert comparison.delta_ci_low < comparison.delta < comparison.delta_ci_high


def test_identical_variants_have_no_difference():
    values = correct(300, 120)
    comparison = statistics.paired(values, values.copy(), SETTINGS)
    assert (comparison.delta, comparison.p_value, comparison.delta_ci_low, comparison.delta_ci_high) == (0, 1, 0, 0)
    scores = np.linspace(-3, 0, 300)
    assert statistics.paired(scores, scores, SETTINGS).p_value == 1.0


def test_a_shift_in_log_probabilities_is_found_by_the_signed_rank_test():
    rng = np.random.default_rng(0)
    reference = rng.normal(-1, 0.3, 400)
    shifted = statistics.paired(reference, reference - 0.2 + rng.normal(0, 0.05, 400), SETTINGS)
    assert shifted.test == "wilcoxon" and shifted.p_value < 1e-10
    assert -0.22 < shifted.delta_ci_low < shifted.delta < shifted.delta_ci_high < -0.18
    est = statistics.mean(reference, SETTINGS)
    assert est.ci_low < reference.mean() < est.ci_high


def test_holm_adjustment_is_statsmodels_and_keeps_nan():
    adjusted = statistics.holm([0.01, 0.04, np.nan, 0.03])
    assert adjusted[:2].tolist() == pytest.approx([0.03, 0.06]) and np.isnan(adjusted[2]) and adjusted[3] == 0.06
    table = pd.DataFrame({"metric": ["a", "a", "b"], "p_value": [0.01, 0.02, 0.02]})
    out = statistics.add_holm(table, by=["metric"])
    assert out["p_holm"].tolist() == pytest.approx([0.02, 0.02, 0.02])


def test_ratio_of_sums_resamples_whole_clusters():
    # Ten entities with 5 test rows each: one entity all right, the rest all wrong.
    est = statistics.ratio_of_sums([5] + [0] * 9, [5] * 10, SETTINGS)
    assert est.value == pytest.approx(0.1)
    # Resampling entities, not rows, gives a wider interval than 50 independent rows would.
    rows = statistics.proportion(correct(50, 5))
    assert est.ci_high - est.ci_low > rows.ci_high - rows.ci_low


# --------------------------------------------------------------- the recall table and sentences
SPECS = [
    VariantSpec(name="fp", method="fp"),
    VariantSpec(name="near", method="gptq", bits=4, group_size=32),
    VariantSpec(name="worse", method="rtn", bits=4, group_size=32),
]


def _scores(one_hop: np.ndarray, held_out: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    n1, n2 = len(one_hop), len(held_out)
    one = pd.DataFrame({"relation": ["r"] * n1, "subject": [f"s{i}" for i in range(n1)], "object": "o",
                        "correct": one_hop, "answer_logprob": np.where(one_hop, -0.1, -3.0)})
    two = pd.DataFrame({"composition": "c", "e1": [f"e{i}" for i in range(n2)], "e2": "b", "e3": "t",
                        "split": "held_out", "readout": "r2(r1(e1))", "correct": held_out,
                        "answer_logprob": np.where(held_out, -0.5, -4.0)})
    return one, two


@pytest.fixture
def study() -> dict:
    """fp right on 200 of 400 facts; ``near`` one prompt apart; ``worse`` wrong on 30% more
    prompts (60 of fp's 200 right answers lost). Held-out: 100 chains, 30 / 29 / 30 right."""
    scores = {
        "fp": _scores(correct(400, 200), correct(100, 30)),
        "near": _scores(correct(400, 199), correct(100, 29)),
        "worse": _scores(correct(400, 140), correct(100, 30)),
    }
    values = {name: prompt_values(*s) for name, s in scores.items()}
    metrics = {name: {k: float(v.mean()) for k, v in values[name].items()} for name in scores}
    footprints = {"fp": {"effective_bits": 32.0}, "near": {"effective_bits": 4.5}, "worse": {"effective_bits": 4.5}}
    table = recall_table(SPECS, metrics, footprints, values, "fp", SETTINGS)
    return {"values": values, "table": table, "pairs": variant_comparisons(SPECS, values, SETTINGS)}


def _row(table: pd.DataFrame, variant: str, metric: str) -> pd.Series:
    return table[(table["variant"] == variant) & (table["metric"] == metric) & table["relation"].isna()].iloc[0]


def test_recall_table_carries_intervals_and_paired_tests(study):
    table = study["table"]
    fp = _row(table, "fp", "one_hop.accuracy")
    assert (fp["value"], fp["n"]) == (0.5, 400) and fp["ci_low"] < 0.5 < fp["ci_high"]
    assert np.isnan(fp["delta"]) and pd.isna(fp["change"])  # the reference is not compared with itself
    near = _row(table, "near", "one_hop.accuracy")
    assert near["delta"] == pytest.approx(-1 / 400) and (near["gained"], near["lost"]) == (0, 1)
    assert near["p_value"] == 1.0 and near["change"] == "noise"
    worse = _row(table, "worse", "one_hop.accuracy")
    assert worse["delta"] == pytest.approx(-0.15) and worse["p_value"] < 1e-15 and worse["change"] == "loss"
    assert worse["p_holm"] == pytest.approx(min(1.0, 2 * worse["p_value"]))  # two variants in the family
    assert worse["delta_ci_high"] < 0 and worse["test"] == "mcnemar_exact"
    assert _row(table, "worse", "one_hop.answer_logprob")["test"] == "wilcoxon"
    # Metrics that average no prompts carry no interval.
    bits = _row(table, "near", "effective_bits")
    assert np.isnan(bits["ci_low"]) and np.isnan(bits["p_value"])


def test_sentences_follow_the_tests(study):
    empty = pd.DataFrame(columns=["variant", "layer", "metric", "value", "probe", "split", "site"])
    tables = StudyTables(study["table"], empty, empty, empty, empty,
                         pd.DataFrame(columns=["variant", "layer", "split", "metric", "value"]))
    sentences = findings(tables, {"held_out": 100}, ReportSettings(bootstrap_resamples=500), study["pairs"])
    one_hop = sentences[0]
    assert one_hop.startswith("fp recalls 50.0% of the one-hop facts (95% CI 45.1-54.9%, 400 prompts).")
    assert "1 of 2 variants lose" in one_hop and "worse (-15.0 points" in one_hop
    assert "near is within the noise of 400 prompts (-0.3 points)" in one_hop
    held_out = next(s for s in sentences if s.startswith("fp answers 30.0% of the held-out"))
    assert "All 2 variants are within the noise of 100 prompts" in held_out
    assert not any("lose" in s and "held-out" in s for s in sentences)
    gains = next(s for s in sentences if s.startswith("Does quantization sometimes improve recall"))
    # worse's one-hop loss, overall and in its one relation; the composition readout is counted once.
    assert "Of 6 comparisons with fp" in gains and "0 are significant gains and 2 significant losses" in gains
    ranking = next(s for s in sentences if s.startswith("At 4 bits, one-hop recall ranks"))
    assert "near above worse (14.8 points" in ranking
    assert "At 4 bits, no variant keeps significantly more held-out composition than another (1 pairs" in "\n".join(sentences)


def test_the_level_names_the_intervals(study):
    empty = pd.DataFrame(columns=["variant", "layer", "metric", "value", "probe", "split", "site"])
    tables = StudyTables(study["table"], empty, empty, empty, empty,
                         pd.DataFrame(columns=["variant", "layer", "split", "metric", "value"]))
    settings = ReportSettings(alpha=0.1, bootstrap_resamples=500)
    values = study["values"]
    metrics = {name: {k: float(v.mean()) for k, v in values[name].items()} for name in values}
    table = recall_table(SPECS, metrics, {name: {} for name in values}, values, "fp", settings)
    tables = StudyTables(table, empty, empty, empty, empty, tables.cnst)
    sentences = findings(tables, {"held_out": 100}, settings, variant_comparisons(SPECS, values, settings))
    assert "(90% CI " in sentences[0] and "alpha 0.1" in sentences[0]
    fp = _row(table, "fp", "one_hop.accuracy")
    assert fp["ci_high"] - fp["ci_low"] < _row(study["table"], "fp", "one_hop.accuracy").pipe(
        lambda r: r["ci_high"] - r["ci_low"])  # a 90% interval is narrower than the 95% one


def test_variant_comparisons_pair_variants_of_one_bit_width(study):
    pairs = study["pairs"]
    assert set(zip(pairs["variant_a"], pairs["variant_b"])) == {("near", "worse")}
    one_hop = pairs[(pairs["metric"] == "one_hop.accuracy") & pairs["relation"].isna()].iloc[0]
    assert (one_hop["value_a"], one_hop["value_b"]) == (199 / 400, 140 / 400)
    assert one_hop["delta"] == pytest.approx(-59 / 400) and one_hop["change"] == "a > b"


def test_mismatched_prompts_are_refused():
    one, _ = _scores(correct(10, 5), correct(4, 1))
    other = one.iloc[::-1].reset_index(drop=True)
    with pytest.raises(PromptMismatchError, match="evaluated on different prompt tables"):
        check_same_prompts({"fp": one, "x": other}, ["relation", "subject", "object"], "one-hop score")
    check_same_prompts({"fp": one, "x": one.copy()}, ["relation", "subject", "object"], "one-hop score")
