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

from fkr_kedro.reporting import figures
from fkr_kedro.reporting.findings import ReportSettings, findings, summary_table
from fkr_kedro.reporting.tables import StudyTables, neuron_retention
from tracked_study import kedro

VARIANTS = ("fp", "bnb_int8", "bnb_nf4", "gptq_w4_g32", "rtn_w2_g32")


def _recall() -> pd.DataFrame:
    specs = {"fp": ("fp", np.nan, 32.0), "a": ("gptq", 4, 4.625), "b": ("rtn", 4, 4.625)}
    metrics = {
        "one_hop.accuracy": {"fp": 0.9, "a": 0.85, "b": 0.895},
        "one_hop.answer_logprob": {"fp": -0.1, "a": -0.5, "b": -0.12},
        "two_hop.seen.accuracy": {"fp": 0.5, "a": 0.4, "b": 0.5},
        "two_hop.seen.chance": {"fp": 0.1, "a": 0.1, "b": 0.1},
        "two_hop.held_out.accuracy": {"fp": 0.12, "a": 0.1, "b": 0.12},
        "two_hop.held_out.chance": {"fp": 0.1, "a": 0.1, "b": 0.1},
        "storage_bytes": {"fp": 4e6, "a": 1e6, "b": 1e6},
    }
    rows = [
        {"variant": v, "method": m, "bits": bits, "group_size": 32 if v != "fp" else np.nan,
         "calibration_size": 128, "metric": metric, "relation": np.nan, "value": values[v]}
        for metric, values in metrics.items() for v, (m, bits, _) in specs.items()
    ]
    rows += [{"variant": v, "method": m, "bits": bits, "group_size": np.nan, "calibration_size": 128,
              "metric": "effective_bits", "relation": np.nan, "value": eff} for v, (m, bits, eff) in specs.items()]
    return pd.DataFrame(rows)


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
    assert sentences[0] == (
        "Full precision (fp) recalls 90.0% of the one-hop facts. 1 of 2 quantized variants lose more than "
        "1 point: a (-5.0). Within 1 point of fp: b."
    )
    assert "At 4 bits, b keeps the most one-hop recall (89.5%) and a the least (85.0%), 4.5 points apart." in sentences
    text = "\n".join(sentences)
    # Seen chains: 50% against chance 10% over 100 chains; held out: 12% is inside 10% +- 5.9 points.
    assert "On two-hop chains seen in training, fp answers 50.0%, above chance" in text
    assert "fp answers 12.0%, within the 95% band of chance (10.0% ±5.9 points over 100 chains)" in text
    assert ("it falls more than 5 points below fp for a from layer 1 (30.0 points lower at layer 2)" in text)
    assert "for a from layer 1" in text and "b from layer" not in text  # b stays within 2 points
    assert "The bridge probe trained on fp peaks at layer 2 (12.0%; chance 10.0%" in text
    assert "does not decode above chance by 5 points" in text
    assert "more than 1 nat lower for a (-3.50)" in text
    assert "b keeps the most above fp's threshold (95.0%) and a the fewest (35.0%; 20.0% in decoder layer 1" in text
    assert "falls below 0.9 for a (from layer 2, 0.80 at layer 2)" in text
    assert "ranges from -5.00 (a, least consistent) to -4.10 (b)" in text


def test_thresholds_change_the_words(tables):
    sentences = _findings(tables, recall_loss_points=10, probe_drop_points=40, cka_threshold=0.5)
    assert sentences[0].endswith("No quantized variant loses more than 10 points. Within 10 points of fp: a and b.")
    text = "\n".join(sentences)
    assert "it stays within 40 points of fp at every layer" in text
    assert "stays at or above 0.5 at every layer for every variant" in text


def test_summary_table_numbers(tables):
    summary = summary_table(StudyTables(**tables), ReportSettings())
    assert list(summary.index) == ["fp", "a", "b"]
    assert summary.loc["a", "one-hop vs fp (points)"] == pytest.approx(-5.0)
    assert summary.loc["a", "fp's top neurons retained"] == pytest.approx(0.35)
    assert summary.loc["b", "answer probe, layer 2"] == pytest.approx(0.88)
    assert summary.loc["a", "CKA, layer 2"] == pytest.approx(0.8)
    assert summary.loc["fp", "storage MB"] == pytest.approx(4.0)


def test_neuron_retention_is_a_share_of_the_reference(tables):
    retention = neuron_retention(tables["attribution"])
    assert retention["a"].tolist() == pytest.approx([0.5, 0.2])
    assert retention["fp"].tolist() == [1.0, 1.0]


def test_accuracy_vs_bits_plots_the_numbers(tables):
    fig = figures.accuracy_vs_bits(tables["recall"])
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert lines["gptq"].get_xdata().tolist() == [4.625] and lines["gptq"].get_ydata().tolist() == [0.85]
    reference = next(label for label in lines if label.startswith("fp (full precision"))
    assert list(lines[reference].get_ydata()) == [0.9, 0.9]  # a horizontal reference line
    assert "chance" in {line.get_label() for line in fig.axes[2].get_lines()}


def test_report_gets_a_scaling_section_only_when_scaling_ran(tables):
    from fkr_kedro.pipelines.report.nodes import FIGURES, build_report

    from fkr_kedro.modeling.load import ModelSource
    from fkr_kedro.parameters import KnowledgeSettings

    t = tables
    inputs = {
        "recall_by_variant": t["recall"], "probe_results": t["probes"], "entrec_results": t["entrec"],
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
    metrics = {"km.adj_r2": 0.93, "km.loso_abs_error.l1": 0.031, "km.loso_abs_error_mean": 0.031, "km.loso_abs_error_max": 0.031}
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
    assert with_scaling.count('src="data:image/png;base64,') == len(FIGURES) + 3 + 1


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.slow
def test_report_of_the_test_run(tracked_study):
    reporting = tracked_study.project / "data/08_reporting"
    html = (reporting / "report.html").read_text()
    # Self-contained: every image embedded, nothing fetched from elsewhere.
    assert not re.search(r'(src|href)="(https?:)?//', html) and "<link" not in html
    from fkr_kedro.pipelines.report.nodes import FIGURES

    assert html.count('src="data:image/png;base64,') == len(FIGURES) + len(VARIANTS)
    for variant in VARIANTS:
        assert f"{variant} layer by layer" in html
        with Image.open(reporting / "figures" / f"layers_{variant}.png") as image:
            assert image.format == "PNG" and image.width > 800
    assert (reporting / "figures/accuracy_vs_bits.png").is_file()

    # The summary holds the evaluate pipeline's numbers, and the recall sentence names exactly
    # the variants that lose more than the threshold (1 point in parameters_report.yml).
    recall = pd.read_csv(reporting / "recall_by_variant.csv")
    one_hop = recall[(recall["metric"] == "one_hop.accuracy") & recall["relation"].isna()].set_index("variant")["value"]
    summary = pd.read_csv(reporting / "report_summary.csv").set_index("variant")
    assert summary["one-hop recall"].to_dict() == pytest.approx(one_hop.to_dict())
    losers = {v for v in VARIANTS if v != "fp" and 100 * (one_hop["fp"] - one_hop[v]) > 1.0}
    sentence = re.search(r"<li>Full precision \(fp\) recalls .*?</li>", html).group(0)
    named = set(re.findall(r"(\w+) \([+-]\d", sentence.split("Within")[0]))
    assert named == losers

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
    (project / "data/08_reporting/probe_results.csv").unlink()
    (project / "data/08_reporting/report.html").unlink()
    result = kedro(project, "run", "--env=test", "--pipeline=report")
    assert result.returncode != 0
    # The console wraps long lines wherever it likes: compare with whitespace collapsed.
    output = " ".join((result.stdout + result.stderr).split())
    assert "probe_results does not exist yet" in output and "kedro run --pipeline=probe" in output
    assert not (project / "data/08_reporting/report.html").exists()


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
