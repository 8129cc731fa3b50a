"""Nodes of the report pipeline: figures from the tidy tables, and one HTML report."""

from __future__ import annotations

import io
from datetime import datetime, timezone

import pandas as pd
from matplotlib.figure import Figure
from PIL.Image import Image

from fkr_kedro.analysis.knowledge_bits import knowledge_bits_sentences
from fkr_kedro.analysis.statistics import ci_label
from fkr_kedro.capacity.study import default_load_sentences
from fkr_kedro.modeling.load import ModelSource
from fkr_kedro.parameters import KnowledgeSettings
from fkr_kedro.pipelines.wiring import by_namespace
from fkr_kedro.reporting import figures
from fkr_kedro.reporting.describe import describe_dataset, describe_model
from fkr_kedro.reporting.findings import (
    DRAW_SPREAD_PERCENT, SEED_SUMMARY_PERCENT, ReportSettings, draw_spread_table, findings, seed_rankings_table, seed_sentences,
    seed_summary_table, summary_table, variance_components_table,
)
from fkr_kedro.reporting.html import ReportFigure, Section, format_table, render
from fkr_kedro.reporting.tables import StudyTables, draw_spread, headline
from fkr_kedro.run_config import active_study_root, kedro_command
from fkr_kedro.scaling.fit import PAPER_SOURCE, exponents_vs_paper, loso_table

def plot_figure(report: ReportSettings, figure: str = "", **tables: pd.DataFrame) -> tuple[Figure, bytes]:
    """One figure of :data:`~fkr_kedro.reporting.figures.FIGURES`, drawn from its tables
    (keyword arguments by catalog name)."""
    entry = figures.FIGURES[figure]
    return _with_png(entry.draw(*(tables[name] for name in entry.tables), report))


def plot_variant_layers(
    recall_by_variant: pd.DataFrame,
    probe_results: pd.DataFrame,
    entrec_results: pd.DataFrame,
    attribution_results: pd.DataFrame,
    drift_results: pd.DataFrame,
    cnst_results: pd.DataFrame,
    report: ReportSettings,
    variant: str = "",
) -> tuple[Figure, bytes]:
    results = StudyTables(recall_by_variant, probe_results, entrec_results, attribution_results, drift_results, cnst_results)
    if variant not in set(results.recall["variant"]):
        raise ValueError(
            f"variant {variant!r} is not in recall_by_variant: run `{kedro_command('--pipeline=evaluate')}` so that "
            f"every configured variant is measured"
        )
    return _with_png(figures.variant_layers(variant, results, report.reference))


def compare_training_seeds(
    report: ReportSettings, seeds: dict[int, str | None] | None = None, **tables: pd.DataFrame,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Every training seed's ``recall_by_variant`` and ``variant_comparisons`` side by side
    (:mod:`fkr_kedro.analysis.seeds`): the per-seed changes, their summary across seeds, the
    method rankings per seed and the variance components (from each seed's
    ``prompt_outcomes``). ``seeds``: ``{seed: namespace}`` (None for ``training.seed``, whose
    tables keep their own names); ``tables``: the tables by catalog name
    (``recall_by_variant``, ``seed1.recall_by_variant`` ...)."""
    from fkr_kedro.analysis import seeds as by_seed

    def table(namespace: str | None, name: str) -> pd.DataFrame:
        return tables[f"{namespace}.{name}" if namespace else name]

    seeds = seeds or {}
    recalls = {seed: table(ns, "recall_by_variant") for seed, ns in seeds.items()}
    deltas = by_seed.seed_deltas(recalls)
    groups = {name: group for recall in recalls.values() for name, group in zip(recall["variant"], recall["variant_group"])}
    rankings = by_seed.seed_rankings({seed: table(ns, "variant_comparisons") for seed, ns in seeds.items()}, groups,
                                     alpha=report.alpha)
    outcomes = {seed: table(ns, "prompt_outcomes") for seed, ns in seeds.items()}
    components = by_seed.variance_components(deltas, outcomes, report.reference, report.alpha)
    return deltas, by_seed.seed_summary(deltas, report.alpha), rankings, components


def plot_seed_deltas(seed_deltas: pd.DataFrame, report: ReportSettings) -> tuple[Figure, bytes]:
    return _with_png(figures.seed_deltas(seed_deltas, report))


def _with_png(figure: Figure) -> tuple[Figure, bytes]:
    """The figure for its MatplotlibDataset (a PNG file kedro-viz previews) and the same
    figure as PNG bytes for the HTML report."""
    return figure, ReportFigure.from_figure("", figure).png


def build_report(
    recall_by_variant: pd.DataFrame,
    variant_comparisons: pd.DataFrame,
    probe_results: pd.DataFrame,
    entrec_results: pd.DataFrame,
    attribution_results: pd.DataFrame,
    drift_results: pd.DataFrame,
    cnst_results: pd.DataFrame,
    two_hop_prompts: pd.DataFrame,
    report: ReportSettings,
    base_model: ModelSource,
    knowledge: KnowledgeSettings,
    scaling_exponents: pd.DataFrame | None,
    scaling_fit_metrics: dict | None,
    scaling_conclusion: dict | None,
    scaling_figure: Image | None,
    missing_variants: list[str] | tuple[str, ...] = (),
    capacity_saturation: pd.DataFrame | None = None,
    capacity_conclusion: dict | None = None,
    capacity_figure: Image | None = None,
    world_summary: dict | None = None,
    training_seed: int = 0,
    seed_summary: pd.DataFrame | None = None,
    seed_rankings: pd.DataFrame | None = None,
    variance_components: pd.DataFrame | None = None,
    **images: bytes,
) -> tuple[pd.DataFrame, str]:
    """The summary table and the HTML report. ``images`` are the PNGs the figure nodes drew:
    ``<figure>_png`` for each of :data:`~fkr_kedro.reporting.figures.FIGURES` and
    ``<variant>.layers_png`` per variant.
    ``missing_variants``: configured variants left out because their job did not succeed
    (``kedro submit``); the report names them first. ``seed_summary``, ``seed_rankings`` and
    ``variance_components`` (:func:`compare_training_seeds`, with ``seed_deltas_png``) come
    with several training seeds; ``training_seed``: ``training.seed`` (of a trained base model)."""
    results = StudyTables(recall_by_variant, probe_results, entrec_results, attribution_results, drift_results, cnst_results)
    summary = summary_table(results, report)
    chains = two_hop_prompts["split"].value_counts().to_dict() if "split" in two_hop_prompts else {}
    sentences = findings(results, chains, report, variant_comparisons)
    percent = [
        c for c in summary.columns
        if c.startswith(("one-hop recall", "two-hop", "answer probe", "modules not")) or "retained" in c
    ]
    cross: dict[str, list[ReportFigure]] = {}
    for name, entry in figures.FIGURES.items():
        cross.setdefault(entry.section, []).append(
            ReportFigure(entry.title, images[f"{name}_png"], entry.caption_for(report)))
    info = headline(results.recall)
    per_variant = [
        ReportFigure(f"{variant} layer by layer", image, _variant_caption(variant, info, report.reference))
        for variant, image in by_namespace(images, "layers_png").items()
    ]
    sections = [
        *(
            [Section("Missing variants", sentences=[
                f"Missing variants: {', '.join(missing_variants)}. Their Slurm jobs failed or were cancelled, so "
                f"this report leaves them out; `{kedro_command(command='submit')}` again runs only them and "
                "rebuilds the report."
            ])]
            if missing_variants else []
        ),
        Section("What the numbers show", sentences=sentences),
        Section("Summary", tables=[("One row per variant; percentages are accuracies.", format_table(summary, percent))]),
        *_draws_section(results.recall, report.alpha),
        _seeds_section(base_model, training_seed, seed_summary, seed_rankings, variance_components,
                       images.pop("seed_deltas_png", None), report),
        Section(figures.RECALL, figures=cross.get(figures.RECALL, [])),
        Section(
            figures.KNOWLEDGE_BITS, sentences=knowledge_bits_sentences(recall_by_variant, report.reference),
            figures=cross.get(figures.KNOWLEDGE_BITS, []),
        ),
        Section(figures.INSIDE, figures=cross.get(figures.INSIDE, [])),
        Section(f"Each variant against {report.reference}", figures=per_variant),
    ]
    scaling = _scaling_section(scaling_exponents, scaling_fit_metrics, scaling_conclusion, scaling_figure)
    if scaling is not None:
        sections.append(scaling)
    capacity = _capacity_section(capacity_saturation, capacity_conclusion, capacity_figure, world_summary,
                                 recall_by_variant, report.reference)
    if capacity is not None:
        sections.append(capacity)
    meta = [
        f"Model: {describe_model(base_model)}. Knowledge: {describe_dataset(knowledge)}.",
        f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from {active_study_root() / '08_reporting'} "
        f"({len(info)} variants, reference {report.reference}). Every sentence is computed from the tables; "
        f"thresholds: report in parameters_report.yml."
    ]
    return summary.reset_index(), render("Quantization and factual knowledge: report", meta, sections)


def _draws_section(recall: pd.DataFrame, alpha: float) -> list[Section]:
    """The spread across calibration draws (``quantize.calibration_seeds``) of each variant
    quantized in more than one, beside the prompt interval; none with one draw."""
    spread = draw_spread(recall)
    if spread.empty:
        return []
    table = draw_spread_table(spread)
    return [Section("Calibration draws", tables=[(
        "Per calibrated variant quantized with more than one calibration draw (quantize.calibration_seeds): the "
        f"lowest and highest value across draws, their range and SD, beside the mean half-width of one draw's "
        f"{ci_label(alpha)} over prompts (descriptive), and the test of whether the draws differ on the same prompts "
        "(Cochran's Q, Holm across variants). The summary above lists each draw as its own variant (<name>_draw1 ...).",
        format_table(table, DRAW_SPREAD_PERCENT),
    )])]


def _seeds_section(
    base_model: ModelSource, training_seed: int, summary: pd.DataFrame | None,
    rankings: pd.DataFrame | None, components: pd.DataFrame | None, image: bytes | None, report: ReportSettings,
) -> Section:
    """Training seeds: with one trained model, what that leaves unmeasured; with several, the
    changes across seeds (summary, rankings, variance components and the figure)."""
    if summary is None:
        if base_model.kind != "train":
            sentence = (f"The base model is loaded ({base_model.kind}): one trained model. The changes above are this "
                        "model's; how much they would move with another training run is not measured.")
        else:
            sentence = (f"One trained model (training seed {training_seed}): every interval above is over prompts (and "
                        "calibration draws where listed); how much another training seed moves the changes is not "
                        f"measured here. `{kedro_command('--params=training_seeds=[0 1 2]')}` (or conf/seeds) "
                        "measures it.")
        return Section("Training seeds", sentences=[sentence])
    section = Section(
        "Training seeds",
        intro=(f"The study ran once per trained model (training_seeds). Per seed, each change against "
               f"{report.reference} has its paired test on the same prompts (Holm within the seed); across seeds the "
               f"unit is the trained model: the mean change with its {ci_label(report.alpha)} (Student's t, "
               "seeds - 1 degrees of freedom, each seed's calibration draws averaged first)."),
        sentences=seed_sentences(summary, rankings, components, report.alpha),
    )
    section.tables.append((
        "Per variant and metric across training seeds (changes in points). Losses/gains: the seeds in which every "
        "calibration draw's paired test (Holm within the seed) found one.",
        format_table(seed_summary_table(summary), SEED_SUMMARY_PERCENT),
    ))
    if rankings is not None and not rankings.empty:
        section.tables.append((
            "Method pairs with the same bit width: b - a per seed (points), the mean with its t interval across seeds, "
            "and in how many seeds the pair's paired tests ranked one above the other.",
            format_table(seed_rankings_table(rankings)),
        ))
    if components is not None and not components.empty:
        section.tables.append((
            "Variance of each variant's change against the reference (points squared) split into prompts, calibration "
            "draws and training seeds (method of moments on the per-prompt outcomes, each component with its "
            "chi-square interval; docs/statistics.md): empty where the design cannot separate a source (one draw a "
            "seed), 0* where the estimate was negative and set to 0.",
            format_table(variance_components_table(components)),
        ))
    if image is not None:
        section.figures.append(ReportFigure(
            "Changes per training seed", image,
            f"Each point: one variant in one training seed and calibration draw, against {report.reference} on the same "
            f"prompts, with its paired {ci_label(report.alpha)}; black bars: the mean over seeds."))
    return section


def _variant_caption(variant: str, info: pd.DataFrame, reference: str) -> str:
    if variant == reference:
        return "The reference: every curve of the other variants is compared against these."
    return f"Dotted lines: {reference}. Method {info.loc[variant, 'method']}."


def _bootstrap_level(fit_metrics: dict | None) -> str:
    """``90%``: the level of the scaling fit's intervals (``scaling.fit.confidence``, recorded
    in its metrics), not the report's own ``report.alpha``."""
    level = (fit_metrics or {}).get("bootstrap_confidence")
    return f"{level:.0%}" if level is not None else "(level not recorded: rerun the scaling fit)"


def _scaling_section(
    exponents: pd.DataFrame | None, fit_metrics: dict | None, conclusion: dict | None, image: Image | None
) -> Section | None:
    """The scaling pipeline's results as it wrote them: its computed conclusion (the
    statements of ``scaling_conclusion``), the exponents, the fit metrics and its figure."""
    if exponents is None and fit_metrics is None and conclusion is None and image is None:
        return None
    section = Section(
        "Scaling: memorization vs utilization",
        intro="From the scaling pipeline (`kedro run --pipeline=scaling`): -ln(Acc_adj) = A N^alpha (log2 B_eff)^beta "
        "(log2 C_b)^gamma G^delta, fitted per task. "
        + (str(conclusion.get("rule", "")) if conclusion else ""),
    )
    if conclusion:
        section.sentences = [str(s) for s in conclusion.get("statements", [])]
    if exponents is not None and not exponents.empty:
        section.tables.append((
            f"Exponents ({_bootstrap_level(fit_metrics)} cluster-bootstrap intervals: model sizes resampled, and seeds "
            "within a size when there are several) beside Zhou et al.'s. "
            + PAPER_SOURCE + "; memorization is the KM tier, application and reasoning the paper's KU tiers.",
            format_table(exponents_vs_paper(exponents, fit_metrics)),
        ))
    if fit_metrics and not loso_table(fit_metrics).empty:
        section.tables.append((
            "Leave-one-size-out prediction: the law fitted on the other sizes predicts each size's points "
            "(mean absolute error in accuracy).",
            format_table(loso_table(fit_metrics)),
        ))
    if exponents is not None:
        section.tables.append(("Exponents with bootstrap intervals.", format_table(exponents.set_index("task"))))
    if fit_metrics:
        fit = pd.DataFrame({"value": pd.Series(fit_metrics, dtype=float)})
        section.tables.append(("Fit metrics.", format_table(fit)))
    if image is not None:
        section.figures.append(ReportFigure("Predicted vs observed", _png(image), "One point per sweep point and task."))
    return section


def _capacity_section(
    saturation: pd.DataFrame | None, conclusion: dict | None, image: Image | None, world_summary: dict | None,
    recall_by_variant: pd.DataFrame, reference: str,
) -> Section | None:
    """The capacity pipeline's results (its computed conclusion, the bits-per-parameter
    table at saturation, the curves) and the default world's load beside them."""
    load = default_load_sentences(world_summary, recall_by_variant, saturation, reference)
    if saturation is None and conclusion is None and image is None:
        return Section("Knowledge load", sentences=load) if load else None
    section = Section(
        "Capacity: stored bits vs knowledge load",
        intro="From the capacity pipeline (`kedro run --pipeline=capacity`): worlds of increasing knowledge load "
        "trained into each model size at a fixed number of exposures per fact, then quantized; stored bits by "
        "Physics of LMs 3.3's estimator (docs/capacity.md).",
        sentences=load + ([str(s) for s in conclusion.get("statements", [])] if conclusion else []),
    )
    if saturation is not None:
        columns = ["exposures", "size", "n_params", "variant", "b_eff", "saturation_bits", "bits_per_param",
                   "kept_vs_fp", "within_5pct_every_load", "fp_flattened"]
        section.tables.append((
            "Bits per parameter at saturation (the most stored over the loads) per format, size and exposures per fact.",
            format_table(saturation[[c for c in columns if c in saturation]].set_index("variant"), ["kept_vs_fp"]),
        ))
    if image is not None:
        section.figures.append(ReportFigure("Capacity curves", _png(image), "Stored bits against the load; dotted: the whole load."))
    return section


def _png(image: Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
