"""The report: figures and sentences computed from known tables, and the report pipeline on
the test run's outputs (tests/tracked_study.py)."""

from __future__ import annotations

import io
import re
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fkr_kedro.analysis.comparisons import recall_table
from fkr_kedro.analysis.statistics import StatisticsSettings
from fkr_kedro.quantization.variants import VariantSpec
from fkr_kedro.reporting import figures
from fkr_kedro.reporting.findings import ReportSettings, findings, summary_table
from fkr_kedro.reporting.tables import StudyTables, neuron_retention
from conftest import TEST_DATA
from tracked_study import kedro

VARIANTS = ("fp", "bnb_int8", "bnb_nf4", "gptq_w4_g32", "rtn_w2_g32")


def _recall() -> pd.DataFrame:
    """The recall table of three variants built from per-prompt scores with known answers:
    one-hop recall 90% / 85% / 89.5% of 200 facts (a loses 10 of fp's facts, b one), two-hop
    50% / 40% / 50% of 100 seen chains and 12% / 10% / 12% of 100 held-out chains."""
    specs = [VariantSpec(name="fp", method="fp"), VariantSpec(name="a", method="gptq", bits=4, group_size=32),
             VariantSpec(name="b", method="rtn", bits=4, group_size=32)]
    right = {"fp": (180, 50, 12), "a": (170, 40, 10), "b": (179, 50, 12)}
    logprob = {"fp": -0.1, "a": -0.5, "b": -0.12}
    values = {}
    for v, (one, seen, held) in right.items():
        values[v] = {
            "one_hop.accuracy": pd.Series(np.arange(200) < one, dtype=float),
            "one_hop.answer_logprob": pd.Series(np.full(200, logprob[v])),
            "two_hop.seen.accuracy": pd.Series(np.arange(100) < seen, dtype=float),
            "two_hop.held_out.accuracy": pd.Series(np.arange(100) < held, dtype=float),
        }
    metrics = {v: {**{k: float(x.mean()) for k, x in values[v].items()}, "two_hop.seen.chance": 0.1,
                   "two_hop.held_out.chance": 0.1} for v in values}
    footprints = {"fp": {"storage_bytes": 4e6, "effective_bits": 32.0}, "a": {"storage_bytes": 1e6, "effective_bits": 4.625},
                  "b": {"storage_bytes": 1e6, "effective_bits": 4.625}}
    return recall_table(specs, metrics, footprints, values, "fp", StatisticsSettings(bootstrap_resamples=200))


def _tidy(curves: dict, **columns) -> pd.DataFrame:
    """{(variant, metric): [value per layer]} as a tidy table with constant extra columns."""
    rows = [{"variant": v, "layer": layer, "metric": metric, "value": value, **columns}
            for (v, metric), values in curves.items() for layer, value in enumerate(values)]
    return pd.DataFrame(rows)


@pytest.fixture
def tables() -> dict[str, pd.DataFrame]:
    answer = _tidy({("fp", "transfer_accuracy"): [0.1, 0.5, 0.9], ("a", "transfer_accuracy"): [0.1, 0.3, 0.6],
                    ("b", "transfer_accuracy"): [0.1, 0.48, 0.88], ("fp", "chance"): [0.1] * 3,
                    ("fp", "control_accuracy"): [0.1] * 3, ("fp", "accuracy"): [0.1, 0.5, 0.9]}, probe="answer")
    bridge = _tidy({("fp", "transfer_accuracy"): [0.1, 0.11, 0.12], ("a", "transfer_accuracy"): [0.1, 0.1, 0.05],
                    ("fp", "chance"): [0.1] * 3, ("fp", "control_accuracy"): [0.09] * 3}, probe="bridge")
    return {
        "recall": _recall(),
        "probes": pd.concat([answer, bridge], ignore_index=True),
        "entrec": _tidy({("fp", "entrec_mean"): [-5, -3, -2], ("a", "entrec_mean"): [-5, -4, -3.5],
                         ("b", "entrec_mean"): [-5, -3, -2.2]}, split="all"),
        "attribution": _tidy({("fp", "top_neurons_retained"): [10, 10], ("a", "top_neurons_retained"): [5, 2],
                              ("b", "top_neurons_retained"): [9, 10]}),
        "drift": _tidy({("fp", "cka"): [1, 1, 1], ("a", "cka"): [1, 0.95, 0.8], ("b", "cka"): [1, 0.99, 0.97],
                        ("fp", "cosine"): [1, 1, 1], ("a", "cosine"): [1, 0.9, 0.7], ("b", "cosine"): [1, 1, 0.99]},
                       site="two_hop.resid_post.mention"),
        "cnst": pd.DataFrame({"variant": ["fp", "a", "b"], "layer": 2, "split": "all", "metric": "cnst_score",
                              "value": [-4.0, -5.0, -4.1]}),
    }


def _findings(tables, **settings):
    return findings(StudyTables(**tables), {"seen": 100, "held_out": 100}, ReportSettings(**settings))


def test_sentences_state_what_known_numbers_show(tables):
    sentences = _findings(tables)
    assert sentences[0].startswith(
        "fp recalls 90.0% of the one-hop facts (95% CI 85.1-93.4%, 200 prompts). 1 of 2 variants lose (paired exact "
        "McNemar on the same prompts, Holm-adjusted over 2 variants, alpha 0.05): a (-5.0 points ["
    )
    assert sentences[0].endswith("b is within the noise of 200 prompts (-0.5 points).")
    text = "\n".join(sentences)
    # Seen chains: a loses 10 of fp's 50 (McNemar p = 0.002); held out: 2 chains apart, noise.
    assert "fp answers 50.0% of the two-hop chains seen in training" in text and "a (-10.0 points" in text
    assert "fp answers 12.0% of the held-out two-hop chains (latent composition) (95% CI 7.0-19.8%, 100 prompts). All 2 variants are within the noise of 100 prompts" in text
    # Seen chains: 50% against chance 10% over 100 chains; held out: 12% is inside 10% +- 5.9 points.
    assert "On two-hop chains seen in training, fp answers 50.0%, above chance" in text
    assert "fp answers 12.0%, within the 95% band of chance (10.0% ±5.9 points over 100 chains)" in text
    assert ("it falls more than 5 points below fp for a from layer 1 (30.0 points lower at layer 2)" in text)
    assert "for a from layer 1" in text and "b from layer" not in text  # b stays within 2 points
    assert "The bridge probe trained on fp peaks at layer 2 (12.0%; chance 10.0%" in text
    assert "does not decode above chance by 5 points" in text
    assert "more than 1 nat lower for a (-3.50)" in text
    assert "the variants keep 35.0% (a) to 95.0% (b) above fp's threshold (no paired tests in the table" in text
    assert "falls below 0.9 for a (from layer 2, 0.80 at layer 2)" in text
    assert "among the variants it ranges from -5.00 (a) to -4.10 (b)" in text


def test_thresholds_change_the_words(tables):
    sentences = _findings(tables, probe_drop_points=40, cka_threshold=0.5)
    text = "\n".join(sentences)
    assert "it falls more than 40 points below fp at no layer" in text
    assert "stays at or above 0.5 at every layer for every variant" in text


def test_a_drop_the_paired_test_does_not_support_is_not_stated(tables):
    probes = tables["probes"].copy()
    transfer = probes["metric"] == "transfer_accuracy"
    # a's answer-probe drop (30 points at layer 2) with a Holm-adjusted p of 0.2: noise.
    probes["p_holm"] = np.where(transfer & (probes["variant"] == "a"), 0.2, np.nan)
    text = "\n".join(_findings({**tables, "probes": probes}))
    assert ("it falls more than 5 points and significantly (paired McNemar on the test rows, Holm p < 0.05) below fp "
            "at no layer") in text
    probes["p_holm"] = np.where(transfer & (probes["variant"] == "a"), 0.001, np.nan)
    text = "\n".join(_findings({**tables, "probes": probes}))
    assert "falls more than 5 points and significantly (paired McNemar on the test rows, Holm p < 0.05) below fp for a" in text


def test_neurons_and_cnst_sentences_follow_their_tests(tables):
    attribution = tables["attribution"].assign(
        p_holm=[np.nan, np.nan, 0.001, 0.2, 0.5, 0.5], delta=[np.nan, np.nan, -5.0, -8.0, -1.0, 0.0])
    cnst = tables["cnst"].assign(ci_low=[-4.2, -5.2, -4.3], ci_high=[-3.8, -4.8, -3.9], p_holm=[np.nan, 0.01, 0.3],
                                 delta=[np.nan, -1.0, -0.1])
    text = "\n".join(_findings({**tables, "attribution": attribution, "cnst": cnst}))
    assert ("Of fp's top attribution neurons, 1 of 2 variants keep significantly fewer above fp's threshold in at least "
            "one layer (paired Wilcoxon over prompts, Holm p < 0.05): a (35.0% overall); a keeps 20.0% in decoder layer "
            "1, its lowest. b is within the noise in every layer.") in text
    assert ("is -4.00 for fp (95% CI -4.20 to -3.80); less consistent (paired Wilcoxon over chains, Holm p < 0.05): "
            "a (-5.00); within the noise: b.") in text


def test_summary_table_numbers(tables):
    summary = summary_table(StudyTables(**tables), ReportSettings())
    assert list(summary.index) == ["fp", "a", "b"]
    assert summary.loc["a", "one-hop recall vs fp (points)"] == pytest.approx(-5.0)
    assert summary.loc["a", "95% CI, one-hop recall"] == "79.4-89.3%"
    assert summary.loc["b", "Holm p, one-hop recall vs fp"] == pytest.approx(1.0)
    assert pd.isna(summary.loc["fp", "Holm p, one-hop recall vs fp"])
    assert summary.loc["a", "fp's top neurons retained"] == pytest.approx(0.35)
    assert summary.loc["b", "answer probe, layer 2"] == pytest.approx(0.88)
    assert summary.loc["a", "CKA, layer 2"] == pytest.approx(0.8)
    assert summary.loc["fp", "storage MB"] == pytest.approx(4.0)


def test_neuron_retention_is_a_share_of_the_reference(tables):
    retention = neuron_retention(tables["attribution"], "fp")
    assert retention["a"].tolist() == pytest.approx([0.5, 0.2])
    assert retention["fp"].tolist() == [1.0, 1.0]


def test_accuracy_vs_bits_plots_the_numbers(tables):
    fig = figures.accuracy_vs_bits(tables["recall"], ReportSettings())
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    bars = {container.get_label(): container for container in ax.containers}
    gptq, _, (segments,) = bars["gptq"]
    assert gptq.get_xdata().tolist() == [4.625] and gptq.get_ydata().tolist() == [0.85]
    # Its error bar spans its Wilson interval (170 of 200: 79.4% to 89.3%).
    (_, low), (_, high) = segments.get_segments()[0]
    assert (low, high) == pytest.approx((0.79394, 0.89286), abs=1e-4)
    assert any(label.startswith("fp: 95% interval") for label in ax.get_legend_handles_labels()[1])
    reference = next(label for label in lines if label.startswith("fp (full precision"))
    assert list(lines[reference].get_ydata()) == [0.9, 0.9]  # a horizontal reference line
    assert "chance" in {line.get_label() for line in fig.axes[2].get_lines()}


def _with_bits_metrics(recall: pd.DataFrame) -> pd.DataFrame:
    """The recall table with known stored-bits metrics: fp 300 bits (0.01 per weight bit),
    a 200 (0.02), b 290 (0.029), and a knowledge load of 400 bits."""
    known = {"stored_bits": {"fp": 300.0, "a": 200.0, "b": 290.0},
             "stored_bits_per_weight_bit": {"fp": 0.01, "a": 0.02, "b": 0.029},
             "knowledge_load_bits": {"fp": 400.0, "a": 400.0, "b": 400.0}}
    spec = recall.drop_duplicates("variant").set_index("variant")[["method", "bits", "group_size", "calibration_size"]]
    rows = [{"variant": v, **spec.loc[v].to_dict(), "metric": metric, "relation": np.nan, "value": value}
            for metric, values in known.items() for v, value in values.items()]
    return pd.concat([recall, pd.DataFrame(rows)], ignore_index=True)


def _catalog(tables) -> dict[str, pd.DataFrame]:
    """The fixture's tables under the catalog names the figure registry reads them by."""
    return {"recall_by_variant": _with_bits_metrics(tables["recall"]), "probe_results": tables["probes"],
            "entrec_results": tables["entrec"], "attribution_results": tables["attribution"],
            "drift_results": tables["drift"], "cnst_results": tables["cnst"]}


def _lines(ax) -> dict[str, list[float]]:
    return {line.get_label(): [float(y) for y in line.get_ydata()] for line in ax.get_lines()}


def _rows(table: pd.DataFrame, variant: str, metric: str, **filters) -> list[float]:
    """A variant's values of one metric by layer, read straight from the tidy table."""
    rows = table[(table["variant"] == variant) & (table["metric"] == metric)]
    for column, value in filters.items():
        rows = rows[rows[column] == value]
    return rows.sort_values("layer")["value"].tolist()


def _check_accuracy_vs_bits(fig, t):
    recall = t["recall_by_variant"]
    one_hop = recall[(recall["metric"] == "one_hop.accuracy") & recall["relation"].isna()].set_index("variant")
    bars = {c.get_label(): c for c in fig.axes[0].containers}
    for method, variant in (("gptq", "a"), ("rtn", "b")):
        line = bars[method][0]
        assert line.get_xdata().tolist() == [4.625]
        assert line.get_ydata().tolist() == pytest.approx([one_hop.loc[variant, "value"]])
    assert [bars["gptq"][0].get_ydata()[0], bars["rtn"][0].get_ydata()[0]] == pytest.approx([0.85, 0.895])
    reference = next(v for k, v in _lines(fig.axes[0]).items() if k.startswith("fp (full precision, 32 bits)"))
    assert reference == pytest.approx([0.9, 0.9])
    # Two-hop panels: seen 50/40/50%, held out 12/10/12%.
    assert {c.get_label(): c[0].get_ydata().tolist() for c in fig.axes[1].containers} \
        == {"gptq": pytest.approx([0.4]), "rtn": pytest.approx([0.5])}
    assert {c.get_label(): c[0].get_ydata().tolist() for c in fig.axes[2].containers} \
        == {"gptq": pytest.approx([0.1]), "rtn": pytest.approx([0.12])}


def _check_probe_by_layer(fig, t):
    # PROBE_TITLES' order: the bridge panel, then the answer panel.
    bridge, answer = (_lines(ax) for ax in fig.axes[:2])
    probes = t["probe_results"]
    assert answer["a"] == pytest.approx([0.1, 0.3, 0.6]) == _rows(probes, "a", "transfer_accuracy", probe="answer")
    assert answer["b"] == pytest.approx([0.1, 0.48, 0.88]) and answer["fp"] == pytest.approx([0.1, 0.5, 0.9])
    assert answer["chance"] == pytest.approx([0.1] * 3)
    assert bridge["a"] == pytest.approx([0.1, 0.1, 0.05]) and "b" not in bridge


def _check_entrec_by_layer(fig, t):
    (curves,) = (_lines(ax) for ax in fig.axes if ax.get_visible())
    assert curves["a"] == pytest.approx([-5, -4, -3.5]) == _rows(t["entrec_results"], "a", "entrec_mean", split="all")
    assert curves["fp"] == pytest.approx([-5, -3, -2]) and curves["b"] == pytest.approx([-5, -3, -2.2])


def _check_neuron_retention_by_layer(fig, t):
    curves = _lines(fig.axes[0])
    # Retained over fp's own count (10 per layer): a keeps 5 and 2, b 9 and 10.
    assert curves == {"fp": pytest.approx([1, 1]), "a": pytest.approx([0.5, 0.2]), "b": pytest.approx([0.9, 1.0])}


def _check_drift_by_layer(fig, t):
    cosine, cka = (_lines(ax) for ax in fig.axes[:2])  # one site: a row per metric (cosine, then CKA)
    drift = t["drift_results"]
    assert cosine == {"a": pytest.approx([1, 0.9, 0.7]), "b": pytest.approx([1, 1, 0.99])}  # the reference left out
    assert cka["a"] == pytest.approx([1, 0.95, 0.8]) == _rows(drift, "a", "cka")
    assert cka["b"] == pytest.approx(_rows(drift, "b", "cka"))


def _check_stored_bits_vs_bits(fig, t):
    stored, per_bit = (_lines(ax) for ax in fig.axes[:2])
    assert stored["gptq"] == [200.0] and stored["rtn"] == [290.0]
    assert stored["fp (32 bits)"] == [300.0, 300.0] and stored["knowledge load"] == [400.0, 400.0]
    assert per_bit["gptq"] == pytest.approx([0.02]) and per_bit["rtn"] == pytest.approx([0.029])
    assert per_bit["fp (32 bits)"] == pytest.approx([0.01, 0.01])


def _check_cnst_score(fig, t):
    ax = fig.axes[0]
    assert [label.get_text() for label in ax.get_xticklabels()] == ["fp", "a", "b"]  # the reference first
    (bars,) = ax.containers
    assert [bar.get_height() for bar in bars] == pytest.approx([-4.0, -5.0, -4.1])


FIGURE_CHECKS = {
    "accuracy_vs_bits": _check_accuracy_vs_bits,
    "probe_by_layer": _check_probe_by_layer,
    "entrec_by_layer": _check_entrec_by_layer,
    "neuron_retention_by_layer": _check_neuron_retention_by_layer,
    "drift_by_layer": _check_drift_by_layer,
    "stored_bits_vs_bits": _check_stored_bits_vs_bits,
    "cnst_score": _check_cnst_score,
}


def test_every_registered_figure_has_a_check_of_its_numbers():
    assert set(FIGURE_CHECKS) == set(figures.FIGURES)


@pytest.mark.parametrize("name", sorted(FIGURE_CHECKS))
def test_each_figure_plots_the_numbers_of_its_tables(tables, name):
    """Each registry entry, drawn from the tables it names, plots the values those tables
    hold (known answers of the hand-made tables)."""
    entry = figures.FIGURES[name]
    catalog = _catalog(tables)
    fig = entry.draw(*(catalog[table] for table in entry.tables), ReportSettings())
    FIGURE_CHECKS[name](fig, catalog)


def test_captions_state_the_configured_level_and_reference():
    settings = ReportSettings(alpha=0.1, reference="b")
    captions = {name: entry.caption_for(settings) for name, entry in figures.FIGURES.items()}
    assert "90% Wilson intervals" in captions["accuracy_vs_bits"] and "95%" not in " ".join(captions.values())
    assert "Share of b's top attribution neurons" in captions["neuron_retention_by_layer"]


def test_styles_follow_the_spec_and_leave_the_registry_alone(tables):
    """Colour by method, line style by the table's bit width; a method the registry does not
    know gets a colour of its own without changing any module state."""
    from fkr_kedro.quantization.methods import METHODS

    recall = tables["recall"].copy()
    recall.loc[recall["variant"] == "b", ["method", "bits"]] = ["mystery", 2]
    before = dict(METHODS)
    styles = figures.variant_styles(recall, "a")
    assert styles["a"]["linewidth"] > styles["fp"]["linewidth"]  # the reference is drawn thickest
    assert styles["fp"]["color"] == METHODS["fp"].color and styles["b"]["linestyle"] == ":"
    assert styles["b"]["color"] not in {m.color for m in METHODS.values()}
    assert dict(METHODS) == before and figures.variant_styles(recall, "a") == styles


def test_report_gets_a_scaling_section_only_when_scaling_ran(tables):
    from fkr_kedro.pipelines.report.nodes import build_report
    from fkr_kedro.reporting.figures import FIGURES

    from fkr_kedro.modeling.load import ModelSource
    from fkr_kedro.parameters import KnowledgeSettings

    t = tables
    inputs = {
        "recall_by_variant": t["recall"], "variant_comparisons": pd.DataFrame(columns=["metric", "relation"]),
        "probe_results": t["probes"], "entrec_results": t["entrec"],
        "attribution_results": t["attribution"], "drift_results": t["drift"], "cnst_results": t["cnst"],
        "two_hop_prompts": pd.DataFrame({"split": ["seen"] * 100 + ["held_out"] * 100}),
        "report": ReportSettings(),
        "base_model": ModelSource(kind="gguf", path="x.gguf", description="X dequantized from Q4_1 (the fp reference is this model)"),
        "knowledge": KnowledgeSettings(),
    }
    png = _png()
    images = {f"{name}_png": png for name in FIGURES} | {f"{v}.layers_png": png for v in ("fp", "a", "b")}
    no_scaling = {"scaling_exponents": None, "scaling_fit_metrics": None, "scaling_conclusion": None, "scaling_figure": None}
    _, without = build_report(**inputs, **no_scaling, **images)
    assert "Scaling" not in without
    assert "Model: X dequantized from Q4_1 (the fp reference is this model). Knowledge: synthetic world" in without
    assert without.count('src="data:image/png;base64,') == len(FIGURES) + 3
    exponents = pd.DataFrame({
        "task": ["km"] * 4, "factor": ["alpha", "beta", "gamma", "delta"], "estimate": [0.5, -1.0, -0.1, 0.05],
        "ci_low": [0.4, -1.2, -0.2, 0.01], "ci_high": [0.6, -0.8, 0.0, 0.09], "adj_r2": [0.91] * 4,
    })
    conclusion = {"rule": "sensitivity = |exponent|", "statements": ["N: km more sensitive than ku (...)"]}
    metrics = {"bootstrap_confidence": 0.9, "km.adj_r2": 0.93, "km.loso_abs_error.l1": 0.031,
               "km.loso_abs_error_mean": 0.031, "km.loso_abs_error_max": 0.031}
    _, with_scaling = build_report(
        **inputs, scaling_exponents=exponents, scaling_fit_metrics=metrics, scaling_conclusion=conclusion,
        scaling_figure=Image.new("RGB", (4, 4)), **images,
    )
    assert "Scaling: memorization vs utilization" in with_scaling
    assert "<li>N: km more sensitive than ku (...)</li>" in with_scaling  # the scaling pipeline's own words
    assert "km.adj_r2" in with_scaling and ">0.4<" in with_scaling
    # The exponent table beside the paper's values, and the leave-one-size-out errors.
    assert "0.500 [0.400, 0.600]" in with_scaling and "paper KM (L1 memorization)" in with_scaling and ">-0.315<" in with_scaling
    assert "Leave-one-size-out" in with_scaling and ">0.031<" in with_scaling
    assert "Exponents (90% cluster-bootstrap intervals" in with_scaling  # the fit's level, not the report's
    assert with_scaling.count('src="data:image/png;base64,') == len(FIGURES) + 3 + 1


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.slow
def test_report_of_the_test_run(tracked_study):
    reporting = tracked_study.project / TEST_DATA / "08_reporting"
    html = (reporting / "report.html").read_text()
    # Self-contained: every image embedded, nothing fetched from elsewhere.
    assert not re.search(r'(src|href)="(https?:)?//', html) and "<link" not in html
    from fkr_kedro.reporting.figures import FIGURES

    assert html.count('src="data:image/png;base64,') == len(FIGURES) + len(VARIANTS)
    for variant in VARIANTS:
        assert f"{variant} layer by layer" in html
        with Image.open(reporting / "figures" / f"layers_{variant}.png") as image:
            assert image.format == "PNG" and image.width > 800
    assert (reporting / "figures/accuracy_vs_bits.png").is_file()

    # The summary holds the evaluate pipeline's numbers, and the recall sentence names as
    # losing exactly the variants whose Holm-adjusted paired test says so (alpha 0.05).
    recall = pd.read_csv(reporting / "recall_by_variant.csv")
    one_hop = recall[(recall["metric"] == "one_hop.accuracy") & recall["relation"].isna()].set_index("variant")
    summary = pd.read_csv(reporting / "report_summary.csv").set_index("variant")
    assert summary["one-hop recall"].to_dict() == pytest.approx(one_hop["value"].to_dict())
    assert (one_hop["ci_low"] <= one_hop["value"]).all() and (one_hop["value"] <= one_hop["ci_high"]).all()
    losers = {v for v in VARIANTS if v != "fp" and one_hop.loc[v, "p_holm"] < 0.05 and one_hop.loc[v, "delta"] < 0}
    assert set(one_hop.loc[[v for v in VARIANTS if v != "fp"], "change"].dropna()) <= {"loss", "gain", "noise"}
    sentence = re.search(r"<li>fp recalls .*? of the one-hop facts.*?</li>", html).group(0)
    lose_part = sentence.split(" lose (")[1].split("). ")[0] if " lose (" in sentence else ""
    named = set(re.findall(r"(\w+) \([+-]\d", lose_part))
    assert named == losers
    assert (reporting / "variant_comparisons.csv").is_file()

    # Every variant of the test study computes in float32 and got the method it is named
    # after on every module; the report says so in its table and in a sentence.
    assert set(summary["compute dtype"]) == {"float32"}
    assert (summary["modules not by its method"].fillna(0) == 0).all()
    assert "Every variant computes its activations in float32" in html
    methods = recall[recall["metric"].str.startswith("modules.") & recall["variant"].isin(["gptq_w4_g32", "rtn_w2_g32"])]
    fractions = methods.pivot(index="variant", columns="metric", values="value")
    assert fractions.loc["gptq_w4_g32", "modules.gptq_fraction"] == 1.0
    assert fractions.loc["rtn_w2_g32", "modules.rtn_fraction"] == 1.0


@pytest.mark.slow
def test_report_without_probe_tables_names_the_pipeline_to_run(tracked_study, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(tracked_study.project, project, ignore=shutil.ignore_patterns("mlruns", "mlflow.db", "build"))
    (project / TEST_DATA / "08_reporting/probe_results.csv").unlink()
    (project / TEST_DATA / "08_reporting/report.html").unlink()
    result = kedro(project, "run", "--env=test", "--pipeline=report")
    assert result.returncode != 0
    # The console wraps long lines wherever it likes: compare with whitespace collapsed.
    output = " ".join((result.stdout + result.stderr).split())
    assert "probe_results does not exist yet" in output and "kedro run --pipeline=probe" in output
    assert not (project / TEST_DATA / "08_reporting/report.html").exists()


def test_dtypes_and_fallbacks_are_stated(tables):
    """Variant b computes in bfloat16 and left a quarter of its modules to RTN: the table and
    the sentences say so; with one dtype and no fallback there is one reassuring sentence."""
    base = tables["recall"]
    extra = {
        "compute_dtype_bits": {"fp": 32, "a": 32, "b": 16},
        "compute_dtype_mantissa_bits": {"fp": 23, "a": 23, "b": 7},
        "modules.rtn_fallback_fraction": {"fp": 0.0, "a": 0.0, "b": 0.25},
        "modules.other_fraction": {"fp": 0.0, "a": 0.1, "b": 0.0},  # a: modules the quantizer did not log
    }
    rows = [
        {**base[base["variant"] == v].iloc[0][["variant", "method", "bits", "group_size", "calibration_size"]].to_dict(),
         "metric": metric, "relation": np.nan, "value": value}
        for metric, values in extra.items() for v, value in values.items()
    ]
    mixed = {**tables, "recall": pd.concat([base, pd.DataFrame(rows)], ignore_index=True)}
    summary = summary_table(StudyTables(**mixed), ReportSettings())
    assert summary["compute dtype"].to_dict() == {"fp": "float32", "a": "float32", "b": "bfloat16"}
    assert summary["modules not by its method"].to_dict() == pytest.approx({"fp": 0.0, "a": 0.1, "b": 0.25})
    text = " ".join(_findings(mixed))
    assert "Variants compute in different dtypes (float32: fp and a; bfloat16: b)" in text
    assert "did not apply the named method to 10.0% of a's modules, 25.0% of b's modules (RTN fallback" in text

    uniform = pd.concat(
        [base, pd.DataFrame(rows).assign(value=lambda f: f["metric"].map(
            {"compute_dtype_bits": 32, "compute_dtype_mantissa_bits": 23, "modules.rtn_fallback_fraction": 0.0,
             "modules.other_fraction": 0.0}))],
        ignore_index=True,
    )
    text = " ".join(_findings({**tables, "recall": uniform}))
    assert "Every variant computes its activations in float32" in text and "did not apply" not in text


@pytest.mark.slow
def test_a_study_against_another_reference(tracked_study, tmp_path):
    """`report.reference: bnb_int8` (a variant of the test env): the tables the reference
    decides are rebuilt from the test study's models and captures (--only-missing-outputs
    after removing them), and every comparison in them is against bnb_int8."""
    project = tmp_path / "project"
    shutil.copytree(tracked_study.project, project, ignore=shutil.ignore_patterns("mlruns", "mlflow.db", "build"))
    reporting = project / TEST_DATA / "08_reporting"
    decided = ("recall_by_variant", "variant_comparisons", "probe_results", "drift_results", "cnst_results",
               "entrec_results", "attribution_results", "report_summary")
    for name in decided:
        (reporting / f"{name}.csv").unlink()
    (reporting / "report.html").unlink()
    result = kedro(project, "run", "--env=test", "--params=report.reference=bnb_int8", "--only-missing-outputs")
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]

    reference = "bnb_int8"
    summary = pd.read_csv(reporting / "report_summary.csv").set_index("variant")
    assert summary.index[0] == reference
    for column, metric in (("one-hop recall", "one_hop.accuracy"), ("two-hop seen", "two_hop.seen.accuracy"),
                           ("two-hop held-out", "two_hop.held_out.accuracy")):
        delta = summary[f"{column} vs {reference} (points)"]
        # The reference has no comparison with itself; every other delta is its value minus the reference's.
        assert pd.isna(delta[reference]) and pd.isna(summary.loc[reference, f"Holm p, {column} vs {reference}"])
        expected = 100 * (summary[column] - summary.loc[reference, column])
        assert delta.drop(reference).to_dict() == pytest.approx(expected.drop(reference).to_dict())
    assert not [c for c in summary.columns if "vs fp" in c or c.startswith("fp's")]
    assert summary[f"{reference}'s top neurons retained"][reference] == pytest.approx(1.0)

    recall = pd.read_csv(reporting / "recall_by_variant.csv")
    one_hop = recall[(recall["metric"] == "one_hop.accuracy") & recall["relation"].isna()].set_index("variant")
    assert one_hop["delta"].drop(reference).to_dict() == pytest.approx(
        (one_hop["value"] - one_hop.loc[reference, "value"]).drop(reference).to_dict())
    # The probe and drift tables compare against bnb_int8 too: its own transfer rows carry no
    # delta, and its residual stream is identical to itself.
    probes = pd.read_csv(reporting / "probe_results.csv")
    transfer = probes[probes["metric"] == "transfer_accuracy"]
    assert transfer[transfer["variant"] == reference]["delta"].isna().all()
    assert transfer[transfer["variant"] == "fp"]["delta"].notna().all()
    drift = pd.read_csv(reporting / "drift_results.csv")
    cosine = drift[(drift["variant"] == reference) & (drift["metric"] == "cosine")]["value"]
    assert cosine.to_numpy() == pytest.approx(1.0, abs=1e-4)

    html = (reporting / "report.html").read_text()
    assert f"<li>{reference} recalls " in html and f"reference {reference})" in html
    assert f"Each variant against {reference}" in html and "The reference: every curve" in html
