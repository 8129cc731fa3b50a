"""Figures of the study, drawn from the tidy tables the pipelines write.

Every function takes tidy tables (``variant``, ``layer``, ``metric``, ``value`` ...) and
returns a matplotlib ``Figure``; none reads or writes files. One colour and marker per method
(:class:`~fkr_kedro.quantization.methods.Method`) and one line style per bit width, read from
the tables' spec columns, the same in every figure; the reference (``report.reference``) is
drawn thickest. Figures are built without pyplot (no GUI backend, nothing left open): save
them, or display them in a notebook.

:data:`FIGURES` is the registry of the report's cross-variant figures: the report pipeline
draws each entry from its tables and places it in the HTML report under its title and
caption. Adding a figure is one function here and one entry there.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator, PercentFormatter

from ..quantization.methods import METHODS
from .findings import ReportSettings
from .tables import StudyTables, headline, layer_metric, metric_interval, neuron_retention, variant_order

BITS_LINESTYLES = {8: "-", 4: "--", 3: "-.", 2: ":"}
# Colours of methods the registry does not know (a table from elsewhere), in order of appearance.
_EXTRA_COLORS = ("tab:pink", "tab:gray", "teal", "navy")

PROBE_TITLES = {
    "subject": "subject probe (subject's last token)",
    "bridge": "bridge probe (end of the bridge's mention)",
    "answer": "answer probe (last token, one-hop)",
    "answer_two_hop": "answer probe (last token, two-hop)",
}
DRIFT_TITLES = {"cosine": "cosine similarity to {reference}", "cka": "linear CKA to {reference}"}


def method_color(method: str) -> str:
    return METHODS[method].color if method in METHODS else "gray"


def method_marker(method: str) -> str:
    return METHODS[method].marker if method in METHODS else "o"


def is_full_precision(method: str) -> bool:
    return method in METHODS and METHODS[method].full_precision


def bits_linestyle(bits) -> str:
    """The line style of a bit width (solid where the spec has none: full precision)."""
    return "-" if bits is None or pd.isna(bits) else BITS_LINESTYLES.get(int(bits), "-")


def variant_styles(recall: pd.DataFrame, reference: str) -> dict[str, dict]:
    """Line and marker style per variant (a new mapping per call): colour by method, line
    style by bit width, both from the table's spec columns; the reference drawn thickest."""
    info = headline(recall)
    unknown = [m for m in dict.fromkeys(info["method"].astype(str)) if m not in METHODS]
    extra = dict(zip(unknown, itertools.cycle(_EXTRA_COLORS)))
    styles = {}
    for variant in variant_order(recall, reference):
        method = str(info.loc[variant, "method"])
        is_ref = variant == reference
        styles[variant] = {
            "color": extra.get(method) or method_color(method),
            "linestyle": "-" if is_ref else bits_linestyle(info.loc[variant, "bits"]),
            "marker": method_marker(method),
            "linewidth": 2.6 if is_ref else 1.6,
            "markersize": 5,
            "zorder": 5 if is_ref else 3,
        }
    return styles


def _level(alpha: float) -> str:
    """``95%`` for alpha 0.05: the level of the report's intervals."""
    return f"{100 * (1 - alpha):g}%"


def accuracy_vs_bits(recall: pd.DataFrame, settings: ReportSettings) -> Figure:
    """One-hop recall and two-hop accuracy (seen and held-out chains) against effective bits
    per weight, one line per method; the reference variant is a horizontal line with its
    1 - alpha interval."""
    reference = settings.reference
    info = headline(recall)
    panels = [
        ("one_hop.accuracy", None, "one-hop recall (knowledge memorization)"),
        ("two_hop.seen.accuracy", "two_hop.seen.chance", "two-hop, chains seen in training"),
        ("two_hop.held_out.accuracy", "two_hop.held_out.chance", "two-hop, held-out chains (latent composition)"),
    ]
    panels = [p for p in panels if p[0] in info.columns]
    fig, axes = _subplots(1, len(panels), figsize=(5.2 * len(panels), 4.6), layout="constrained", squeeze=False)
    quantized = info.drop(index=reference, errors="ignore")
    # Round bit widths as ticks: stored formats sit a little above them (scales, zero points).
    low, high = float(quantized["effective_bits"].min()), float(quantized["effective_bits"].max())
    ticks = [t for t in (1, 2, 3, 4, 5, 6, 8, 10, 12, 16) if low * 0.8 <= t <= high * 1.25] or [round(low, 1)]
    for ax, (metric, chance, title) in zip(axes[0], panels):
        interval = metric_interval(recall, metric)
        for method, rows in quantized.groupby("method", sort=False):
            rows = rows.sort_values("effective_bits")
            bounds = interval.reindex(rows.index)
            # Error bars: the 1 - alpha interval over prompts (Wilson), where the table carries it.
            yerr = np.vstack([rows[metric] - bounds["ci_low"], bounds["ci_high"] - rows[metric]]).clip(min=0)
            ax.errorbar(
                rows["effective_bits"], rows[metric], yerr=None if np.isnan(yerr).all() else np.nan_to_num(yerr),
                color=method_color(method), marker=method_marker(method), linewidth=1.6,
                markersize=7, capsize=3, elinewidth=1, label=method,
            )
        if reference in info.index:
            ref_bits = info.loc[reference, "effective_bits"]
            ax.axhline(info.loc[reference, metric], color="black", linestyle="--", linewidth=1.4,
                       label=f"{reference} ({_precision(info.loc[reference, 'method'])}{ref_bits:.0f} bits)")
            if reference in interval.index and not interval.loc[reference, ["ci_low", "ci_high"]].isna().any():
                ax.axhspan(interval.loc[reference, "ci_low"], interval.loc[reference, "ci_high"], color="black",
                           alpha=0.08, label=f"{reference}: {_level(settings.alpha)} interval")
        if chance and chance in info.columns and reference in info.index:
            ax.axhline(info.loc[reference, chance], color="gray", linestyle=":", linewidth=1.4, label="chance")
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticklabels([f"{t:g}" for t in ticks])
        ax.set_xlim(low * 0.85, high * 1.15)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_ylim(bottom=0, top=min(1.02, max(0.05, float(info[metric].max()) * 1.1)))
        ax.set_xlabel("effective bits per weight (stored format, log scale)")
        ax.set_title(title, fontsize=11)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=9)
    fig.suptitle("Accuracy vs effective bits per weight, by quantization method", fontsize=13)
    return fig


def _precision(method: str) -> str:
    return "full precision, " if is_full_precision(str(method)) else ""


def stored_bits_vs_bits(recall: pd.DataFrame, settings: ReportSettings) -> Figure:
    """Knowledge in bits (Physics of LMs 3.3's estimator, every one-hop fact) against
    effective bits per weight, one line per method: the stored bits, and the stored bits per
    stored weight bit. A placeholder when the table carries no bits metrics."""
    reference = settings.reference
    info = headline(recall)
    if "stored_bits" not in info.columns:
        fig, ax = _subplots(1, 1, figsize=(6, 2))
        ax.text(0.5, 0.5, "no knowledge-bits metrics (a study without one-hop facts)", ha="center", va="center")
        ax.set_axis_off()
        return fig
    fig, axes = _subplots(1, 2, figsize=(11, 4.4), layout="constrained")
    quantized = info.drop(index=reference, errors="ignore")
    panels = [("stored_bits", "stored knowledge bits"), ("stored_bits_per_weight_bit", "stored bits per stored weight bit")]
    for ax, (metric, label) in zip(axes, panels):
        for method, rows in quantized.groupby("method", sort=False):
            rows = rows.sort_values("effective_bits")
            ax.plot(rows["effective_bits"], rows[metric], color=method_color(method),
                    marker=method_marker(method), linewidth=1.6, markersize=7, label=method)
        if reference in info.index:
            ax.axhline(info.loc[reference, metric], color="black", linestyle="--", linewidth=1.4,
                       label=f"{reference} ({info.loc[reference, 'effective_bits']:.0f} bits)")
        if metric == "stored_bits" and "knowledge_load_bits" in info:
            ax.axhline(float(info["knowledge_load_bits"].max()), color="gray", linestyle=":", linewidth=1.4,
                       label="knowledge load")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("effective bits per weight (stored format, log scale)")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=9)
    fig.suptitle("Knowledge in bits vs effective bits per weight, by quantization method", fontsize=12)
    return fig


def capacity_curves(points: pd.DataFrame) -> Figure:
    """Capacity curves: stored knowledge bits against the knowledge load, one panel per
    exposures per fact, one line per format (colour by method, line style by bit width) and
    model size (marker); the dotted diagonal stores the whole load."""
    exposures = sorted(points["exposures"].unique())
    fig, axes = _subplots(1, len(exposures), figsize=(6.2 * len(exposures), 5), layout="constrained", squeeze=False)
    size_markers = dict(zip(sorted(points["size"].unique()), "osD^vP"))
    for ax, e in zip(axes[0], exposures):
        part = points[points["exposures"] == e]
        for (size, variant), rows in part.groupby(["size", "variant"], sort=False):
            rows = rows.sort_values("load_bits")
            method, bits = str(rows["method"].iloc[0]), rows["bits"].iloc[0]
            full = is_full_precision(method)
            ax.plot(
                rows["load_bits"], rows["stored_bits"], color=method_color(method),
                linestyle="-" if full else bits_linestyle(bits),
                marker=size_markers[size], linewidth=2.4 if full else 1.3, markersize=5,
                label=f"{variant} ({size})",
            )
        top = float(part["load_bits"].max())
        ax.plot([0, top], [0, top], color="gray", linestyle=":", linewidth=1, label="whole load stored")
        ax.set_xlabel("knowledge load (bits)")
        ax.set_ylabel("stored knowledge bits")
        ax.set_title(f"{e:g} exposures per fact", fontsize=11)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=7, ncols=2)
    fig.suptitle("Capacity: stored bits vs knowledge load, per format and model size", fontsize=12)
    return fig


def damage_along_training(damage: pd.DataFrame, bits: dict[str, int | None]) -> Figure:
    """Quantization damage against training steps: one panel per measure (one-hop accuracy
    and held-out composition lost, in points; share of stored bits lost), one line per
    format with its interval over seeds (shaded). ``bits``: each variant's bit width, from
    its spec (one line style per bit width)."""
    titles = {
        "one_hop_accuracy": ("one-hop accuracy lost (points)", 100),
        "held_out_accuracy": ("held-out composition lost (points)", 100),
        "stored_bits": ("share of stored bits lost", 1),
    }
    fig, axes = _subplots(1, len(titles), figsize=(5 * len(titles), 4.2), layout="constrained", squeeze=False)
    for ax, (measure, (title, scale)) in zip(axes[0], titles.items()):
        part = damage[damage["measure"] == measure]
        for variant, rows in part.groupby("variant", sort=False):
            rows = rows.sort_values("step")
            method = str(rows["method"].iloc[0])
            color = method_color(method) if method in METHODS else None
            style = bits_linestyle(bits.get(variant))
            ax.plot(rows["step"], scale * rows["loss_mean"], marker="o", markersize=4, color=color, linestyle=style,
                    label=variant)
            ax.fill_between(rows["step"], scale * rows["loss_low"], scale * rows["loss_high"], color=color, alpha=0.15)
        ax.axhline(0, color="gray", linewidth=0.8)
        ax.set_xlabel("training step")
        ax.set_title(title, fontsize=11)
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=9)
    fig.suptitle("Quantization damage along training (mean over seeds, shaded: interval)", fontsize=12)
    return fig


def _plot_metric(ax, table: pd.DataFrame, metric: str, styles: dict[str, dict], **where) -> pd.DataFrame:
    """The curves of ``metric`` per variant (the rows matching ``where``), each shaded by its
    interval where the table has one; returns the curves."""
    curves = layer_metric(table, metric, **where)
    _plot_curves(ax, curves, styles, layer_metric(table, metric, "ci_low", **where),
                 layer_metric(table, metric, "ci_high", **where))
    return curves


def _plot_curves(ax, curves: pd.DataFrame, styles: dict[str, dict], low: pd.DataFrame | None = None,
                 high: pd.DataFrame | None = None) -> None:
    """One line per variant column of ``curves`` (index = layer), in the variants' styles;
    shaded between ``low`` and ``high`` (its interval) where given."""
    for variant, style in styles.items():
        if variant in curves:
            ax.plot(curves.index, curves[variant], label=variant, **style)
            if low is not None and high is not None and variant in low and variant in high:
                band = pd.concat([low[variant], high[variant]], axis=1).reindex(curves.index)
                if band.notna().all(axis=None):
                    ax.fill_between(curves.index, band.iloc[:, 0], band.iloc[:, 1], color=style["color"],
                                    alpha=0.1, linewidth=0)


def probe_accuracy_by_layer(probes: pd.DataFrame, recall: pd.DataFrame, settings: ReportSettings) -> Figure:
    """Per probe, the accuracy of the probe trained on the reference and applied unchanged
    to each variant, per layer (0 = embeddings), shaded by its interval over the test
    entities where the table carries one, with the probe's chance rate."""
    reference = settings.reference
    names = [p for p in PROBE_TITLES if p in set(probes["probe"])]
    fig, axes = _grid(len(names), ncols=2, size=(5.4, 3.6))
    styles = variant_styles(recall, reference)
    for ax, probe in zip(axes, names):
        transfer = _plot_metric(ax, probes, "transfer_accuracy", styles, probe=probe)
        chance = layer_metric(probes, "chance", probe=probe)
        if reference in chance:
            ax.plot(chance.index, chance[reference], color="gray", linestyle=":", linewidth=1.4, label="chance")
        _layer_axis(ax, transfer.index)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.set_ylim(0, 1.02)
        ax.set_title(PROBE_TITLES[probe], fontsize=10)
        ax.set_ylabel(f"accuracy of {reference}'s probe")
    _legend(fig, axes)
    fig.suptitle(f"Linear probes per layer: {reference}'s probe applied to each variant", fontsize=13)
    return fig


def entrec_by_layer(entrec: pd.DataFrame, recall: pd.DataFrame, settings: ReportSettings) -> Figure:
    """Mean EntRec (log-probability of the bridge entity's first token, read through the
    variant's own head at the end of the bridge's mention) per layer, per split of chains."""
    reference = settings.reference
    splits = [s for s in ("all", "seen", "held_out") if s in set(entrec.get("split", pd.Series(["all"])))]
    fig, axes = _grid(len(splits), ncols=3, size=(4.6, 3.8))
    styles = variant_styles(recall, reference)
    for ax, split in zip(axes, splits):
        curves = _plot_metric(ax, entrec, "entrec_mean", styles, split=split)
        _layer_axis(ax, curves.index)
        ax.set_title(f"{split.replace('_', '-')} chains", fontsize=10)
        ax.set_ylabel("mean EntRec (log-prob, nats)")
    _legend(fig, axes)
    fig.suptitle("EntRec per layer: is the bridge entity recoverable at its mention?", fontsize=13)
    return fig


def neuron_retention_by_layer(attribution: pd.DataFrame, recall: pd.DataFrame, settings: ReportSettings) -> Figure:
    """Per layer, the share of the reference's top attribution neurons that still score
    above the reference's threshold in each variant."""
    reference = settings.reference
    retention = neuron_retention(attribution, reference)
    fig, ax = _subplots(figsize=(8.5, 4.4), layout="constrained")
    _plot_curves(ax, retention, variant_styles(recall, reference))
    _layer_axis(ax, retention.index, embeddings=False)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"{reference}'s top neurons retained")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right center", fontsize=9)
    fig.suptitle("Neuron retention per layer (FFN neurons that drive the answer)", fontsize=13)
    return fig


def drift_by_layer(drift: pd.DataFrame, recall: pd.DataFrame, settings: ReportSettings) -> Figure:
    """Cosine similarity and linear CKA of each variant's residual stream against the
    reference, per layer and capture site."""
    reference = settings.reference
    sites = list(dict.fromkeys(drift["site"]))
    metrics = [m for m in DRIFT_TITLES if m in set(drift["metric"])]
    fig, axes = _subplots(
        len(metrics), len(sites), figsize=(3.6 * len(sites), 3.1 * len(metrics)), layout="constrained",
        squeeze=False, sharey="row",
    )
    styles = variant_styles(recall, reference)
    for i, metric in enumerate(metrics):
        for j, site in enumerate(sites):
            ax = axes[i][j]
            curves = layer_metric(drift, metric, site=site)
            _plot_curves(ax, curves.drop(columns=reference, errors="ignore"), styles)
            _layer_axis(ax, sorted(set(drift["layer"])))
            if i < len(metrics) - 1:
                ax.set_xlabel("")
            if i == 0:
                ax.set_title(site.replace(".resid_post.", ", residual at "), fontsize=9)
            if j == 0:
                ax.set_ylabel(DRIFT_TITLES[metric].format(reference=reference))
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=9)
    fig.suptitle(f"Representation drift against {reference}, per layer (1 = unchanged)", fontsize=13)
    return fig


def cnst_scores(cnst: pd.DataFrame, recall: pd.DataFrame, settings: ReportSettings) -> Figure:
    """CnstScore per variant (how far the two-hop answer distribution is from the one-hop
    one; 0 = identical), on all, seen and held-out chains. It compares output distributions,
    so there is one value per variant, at the model's output."""
    reference = settings.reference
    scores = cnst[cnst["metric"] == "cnst_score"].pivot_table(index="variant", columns="split", values="value")
    order = [v for v in variant_order(recall, reference) if v in scores.index]
    splits = [s for s in ("all", "seen", "held_out") if s in scores.columns]
    fig, ax = _subplots(figsize=(max(6.0, 0.75 * len(order) + 2), 4.2), layout="constrained")
    width = 0.8 / len(splits)
    x = np.arange(len(order))
    for k, split in enumerate(splits):
        ax.bar(x + (k - (len(splits) - 1) / 2) * width, scores.loc[order, split], width,
               label=split.replace("_", "-"), color=["0.25", "tab:blue", "tab:orange"][k % 3])
    ax.set_xticks(x, order, rotation=40, ha="right")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("CnstScore (0 = consistent)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="chains", fontsize=9)
    fig.suptitle("CnstScore per variant: two-hop vs one-hop answer consistency", fontsize=13)
    return fig


def variant_layers(variant: str, tables: StudyTables, reference: str) -> Figure:
    """One variant against the reference, layer by layer: probe accuracy, EntRec, neuron
    retention and drift; its recall and CnstScore in the title."""
    probes, entrec, attribution, drift = tables.probes, tables.entrec, tables.attribution, tables.drift
    info = headline(tables.recall)
    fig, axes = _subplots(2, 2, figsize=(12, 7.4), layout="constrained")
    (ax_probe, ax_entrec), (ax_neurons, ax_drift) = axes
    colors = dict(zip(PROBE_TITLES, ["tab:purple", "tab:blue", "tab:green", "tab:orange"]))
    for probe, color in colors.items():
        if probe not in set(probes["probe"]):
            continue
        transfer = layer_metric(probes, "transfer_accuracy", probe=probe)
        if variant in transfer:
            ax_probe.plot(transfer.index, transfer[variant], color=color, marker="o", label=f"{probe} ({variant})")
        if reference in transfer and variant != reference:
            ax_probe.plot(transfer.index, transfer[reference], color=color, linestyle=":", linewidth=1.4,
                          label=f"{probe} ({reference})")
    ax_probe.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax_probe.set_ylim(0, 1.02)
    ax_probe.set_title(f"accuracy of {reference}'s probes", fontsize=10)
    ax_probe.legend(fontsize=7, ncol=2)

    curves = layer_metric(entrec, "entrec_mean", split="all")
    for name, style in ((variant, {"color": "tab:blue", "marker": "o"}), (reference, {"color": "black", "linestyle": ":"})):
        if name in curves and (name == variant or variant != reference):
            ax_entrec.plot(curves.index, curves[name], label=name, **style)
    ax_entrec.set_title("EntRec of the bridge entity (mean log-prob)", fontsize=10)
    ax_entrec.legend(fontsize=8)

    retention = neuron_retention(attribution, reference)
    if variant in retention:
        ax_neurons.plot(retention.index, retention[variant], color="tab:red", marker="o", label=variant)
    ax_neurons.axhline(1.0, color="black", linestyle=":", linewidth=1.2, label=reference)
    ax_neurons.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax_neurons.set_ylim(0, 1.05)
    ax_neurons.set_title(f"{reference}'s top attribution neurons retained", fontsize=10)
    ax_neurons.legend(fontsize=8)
    _layer_axis(ax_neurons, retention.index, embeddings=False)

    site_colors = itertools.cycle(["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown"])
    for site in dict.fromkeys(drift["site"]):
        color = next(site_colors)
        for metric, linestyle in (("cosine", "-"), ("cka", "--")):
            curve = layer_metric(drift, metric, site=site)
            if variant in curve:
                label = f"{metric}, {site.replace('.resid_post.', ' @ ')}"
                ax_drift.plot(curve.index, curve[variant], color=color, linestyle=linestyle, marker=".", label=label)
    ax_drift.set_ylim(top=1.02)
    ax_drift.set_title(f"drift against {reference} (cosine solid, CKA dashed)", fontsize=10)
    ax_drift.legend(fontsize=7)
    for ax in (ax_probe, ax_entrec, ax_drift):
        _layer_axis(ax, layer_metric(drift, "cosine").index if ax is ax_drift else curves.index)

    fig.suptitle(_variant_title(variant, info, tables.cnst, reference), fontsize=12)
    return fig


def _variant_title(variant: str, info: pd.DataFrame, cnst: pd.DataFrame, reference: str) -> str:
    row = info.loc[variant]
    spec = str(row["method"])
    if not pd.isna(row.get("bits")):
        spec += f", {int(row['bits'])} bits"
    if not pd.isna(row.get("group_size")):
        spec += f", group {int(row['group_size'])}"
    title = f"{variant} ({spec}; {row['effective_bits']:.2f} effective bits): one-hop recall {row['one_hop.accuracy']:.1%}"
    if reference in info.index and variant != reference:
        title += f" ({reference} {info.loc[reference, 'one_hop.accuracy']:.1%})"
    score = cnst[(cnst["metric"] == "cnst_score") & (cnst.get("split", "all") == "all")].set_index("variant")["value"]
    if variant in score.index:
        title += f"; CnstScore {score[variant]:.2f}"
        if reference in score.index and variant != reference:
            title += f" ({reference} {score[reference]:.2f})"
    return title


def scaling_predicted_vs_observed(points: pd.DataFrame) -> Figure:
    """One panel per task: observed vs predicted -ln(Acc_adj) on log axes, one colour per
    model size, filled markers for fitted points, open ones for points left out of the fit
    (e.g. 2-bit); points at or below chance have no observed value and are counted in the
    panel title. ``points`` is the scaling study's points table
    (:func:`fkr_kedro.scaling.fit.fit_study`)."""
    quantized = points[~points["method"].map(is_full_precision)]
    tasks = list(dict.fromkeys(quantized["task"]))
    fig, axes = _subplots(1, max(1, len(tasks)), figsize=(4.6 * max(1, len(tasks)), 4.4), squeeze=False, layout=None)
    models = sorted(quantized["model"].unique(), key=lambda m: quantized.loc[quantized["model"] == m, "n_params"].iloc[0])
    colours = dict(zip(models, colormaps["viridis"](np.linspace(0.05, 0.9, len(models)))))
    for ax, task in zip(axes[0], tasks):
        rows = quantized[quantized["task"] == task]
        shown = rows.dropna(subset=["observed_neg_log_acc_adj", "predicted_neg_log_acc_adj"])
        for model in models:
            for in_fit, marker_face in ((True, None), (False, "none")):
                part = shown[(shown["model"] == model) & (shown["in_fit"] == in_fit)]
                if part.empty:
                    continue
                n = int(part["n_params"].iloc[0])
                ax.scatter(
                    part["observed_neg_log_acc_adj"], part["predicted_neg_log_acc_adj"],
                    color=colours[model], facecolors=marker_face if marker_face else colours[model],
                    marker="o" if in_fit else "s", s=30,
                    label=f"{model} (N={n:,})" + ("" if in_fit else ", not in fit"),
                )
        if not shown.empty:
            values = pd.concat([shown["observed_neg_log_acc_adj"], shown["predicted_neg_log_acc_adj"]])
            lo, hi = values.min() / 1.5, values.max() * 1.5
            ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--")
            ax.set_xscale("log")
            ax.set_yscale("log")
            for axis in (ax.xaxis, ax.yaxis):  # minor labels overlap when the range is about a decade
                axis.set_minor_formatter(NullFormatter())
        else:
            ax.text(0.5, 0.5, "not fitted", ha="center", va="center", transform=ax.transAxes)
        below = int((rows["excluded_reason"] == "at_or_below_chance").sum())
        ax.set_title(f"{task} ({below} of {len(rows)} points at or below chance)", fontsize=9)
        ax.set_xlabel("observed -ln(Acc_adj)")
        ax.set_ylabel("predicted -ln(Acc_adj)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="upper left")
    fig.suptitle("Scaling law: predicted vs observed (open squares: left out of the fit)", fontsize=10)
    fig.tight_layout()
    return fig


def scaling_training_curves(records: dict[str, dict]) -> Figure:
    """The smoothed training loss of each scaling model size against exposures per
    statement (``records``: size -> its training record, :func:`fkr_kedro.scaling.sweep.train_or_reuse`)."""
    fig, ax = _subplots(figsize=(6, 4))
    ordered = sorted(records.items(), key=lambda item: item[1]["n_params"])
    colours = colormaps["viridis"](np.linspace(0.05, 0.9, max(1, len(ordered))))
    for colour, (size, record) in zip(colours, ordered):
        history = pd.DataFrame(record.get("history", []))
        if history.empty:
            continue
        batch = record["fingerprint"]["training"]["batch_size"]
        x = (history["step"] + 1) * batch / record.get("n_statements", 1)
        ax.plot(x, history["loss"], color=colour, label=f"{size} (N={int(record['n_params']):,})")
    ax.set_yscale("log")
    ax.set_xlabel("exposures per statement")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_title("Scaling models: training curves", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return fig


def _subplots(nrows: int = 1, ncols: int = 1, figsize=None, squeeze: bool = True, layout="constrained", **kwargs):
    figure = Figure(figsize=figsize, layout=layout)
    return figure, figure.subplots(nrows, ncols, squeeze=squeeze, **kwargs)


def _grid(n: int, ncols: int, size: tuple[float, float]):
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = _subplots(nrows, ncols, figsize=(size[0] * ncols + 2.2, size[1] * nrows), layout="constrained",
                             squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _layer_axis(ax, layers, embeddings: bool = True) -> None:
    layers = sorted(int(layer) for layer in layers)
    if layers:
        ax.set_xticks(layers)
    # Residual-stream tables count layer 0 as the embeddings; attribution counts decoder layers from 0.
    ax.set_xlabel("layer (0 = embeddings)" if embeddings else "decoder layer (0 = first)")
    ax.grid(alpha=0.3)


def _legend(fig: Figure, axes) -> None:
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=9)


def seed_deltas(deltas: pd.DataFrame, settings: ReportSettings) -> Figure:
    """Each variant's change against the reference in every training seed and calibration
    draw (``analysis.seeds.seed_deltas``): one panel per headline metric, one column of points
    per variant (its draws together), one colour per training seed, error bars the paired
    interval over prompts; the black bar is the mean over seeds."""
    from ..analysis.comparisons import HEADLINE_METRICS

    metrics = [m for m in HEADLINE_METRICS if m in set(deltas["metric"])]
    fig = Figure(figsize=(max(7.0, 0.55 * deltas["variant_group"].nunique() + 3), 3.2 * max(len(metrics), 1)),
                 layout="constrained")
    axes = fig.subplots(max(len(metrics), 1), 1, squeeze=False)[:, 0]
    seeds = sorted(deltas["training_seed"].unique())
    colors = colormaps["tab10"]
    groups = list(dict.fromkeys(deltas["variant_group"]))
    for ax, metric in zip(axes, metrics):
        rows = deltas[deltas["metric"] == metric]
        for i, seed in enumerate(seeds):
            part = rows[rows["training_seed"] == seed]
            offsets = (i - (len(seeds) - 1) / 2) * 0.22
            x = np.array([groups.index(g) for g in part["variant_group"]]) + offsets
            y = 100 * part["delta"].to_numpy(dtype=float)
            err = 100 * np.abs(part[["delta_ci_low", "delta_ci_high"]].to_numpy(dtype=float).T - part["delta"].to_numpy(dtype=float))
            ax.errorbar(x, y, yerr=err, fmt="o", ms=4, color=colors(i % 10), alpha=0.85, capsize=2, lw=0.8,
                        label=f"training seed {seed}")
        means = rows.groupby("variant_group", sort=False)["delta"].mean()
        ax.scatter([groups.index(g) for g in means.index], 100 * means.to_numpy(), marker="_", s=400, color="black",
                   zorder=3, label="mean over seeds")
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xticks(range(len(groups)), groups, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel(f"{metric}\nchange vs {settings.reference} (points)", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8)
    return fig


@dataclass(frozen=True)
class StudyFigure:
    """A cross-variant figure of the report. ``draw(*tables, settings)`` takes the catalog
    tables named in ``tables`` (in that order) and the report settings; the report pipeline
    writes it as ``figures/{name}.png`` (``{name}_plot``) and embeds it in ``section`` under
    ``title`` and ``caption`` (``{level}``: the intervals' level, 1 - report.alpha;
    ``{reference}``: report.reference)."""

    name: str
    draw: Callable[..., Figure]
    tables: tuple[str, ...]
    title: str
    caption: str
    section: str

    def caption_for(self, settings: ReportSettings) -> str:
        return self.caption.format(level=_level(settings.alpha), reference=settings.reference)


RECALL, KNOWLEDGE_BITS, INSIDE = "Recall", "Knowledge in bits", "Inside the network"
_BY_VARIANT = ("recall_by_variant",)

# The report's cross-variant figures, in the report's order within each section.
FIGURES: dict[str, StudyFigure] = {
    f.name: f
    for f in (
        StudyFigure(
            "accuracy_vs_bits", accuracy_vs_bits, _BY_VARIANT, "Accuracy vs effective bits",
            "One-hop recall and two-hop accuracy against effective bits per weight read from the stored "
            "format; error bars: {level} Wilson intervals over prompts; the dashed line and grey band are the "
            "reference and its interval, the dotted line chance. Overlapping bars do not mean no difference: the "
            "paired tests (recall_by_variant.csv, variant_comparisons.csv) decide.",
            RECALL,
        ),
        StudyFigure(
            "probe_by_layer", probe_accuracy_by_layer, ("probe_results", *_BY_VARIANT), "Probe accuracy per layer",
            "Linear probes trained on the reference, applied unchanged to every variant (the bridge "
            "entity itself, the first token of the other entities); shaded: {level} intervals over the test "
            "entities (cluster bootstrap); dotted: chance.",
            INSIDE,
        ),
        StudyFigure(
            "entrec_by_layer", entrec_by_layer, ("entrec_results", *_BY_VARIANT), "EntRec per layer",
            "Mean log-probability of the bridge entity's first token at the end of its mention, read "
            "through each variant's own final norm and unembedding; shaded: {level} bootstrap intervals over chains.",
            INSIDE,
        ),
        StudyFigure(
            "neuron_retention_by_layer", neuron_retention_by_layer, ("attribution_results", *_BY_VARIANT),
            "Neuron retention per layer",
            "Share of {reference}'s top attribution neurons that still score above {reference}'s threshold.",
            INSIDE,
        ),
        StudyFigure(
            "drift_by_layer", drift_by_layer, ("drift_results", *_BY_VARIANT), "Drift per layer",
            "Cosine similarity and linear CKA of each variant's residual stream against {reference}, "
            "per capture site.",
            INSIDE,
        ),
        StudyFigure(
            "stored_bits_vs_bits", stored_bits_vs_bits, _BY_VARIANT, "Knowledge in bits vs effective bits",
            "Stored bits of one-hop knowledge (Physics of LMs 3.3's lower bound, every fact of the world: "
            "log2 of the candidates plus log2 of the whole object name's probability, summed per relation; "
            "docs/capacity.md), and the same per stored weight bit; dashed: {reference}, dotted: the load.",
            KNOWLEDGE_BITS,
        ),
        StudyFigure(
            "cnst_score", cnst_scores, ("cnst_results", *_BY_VARIANT), "CnstScore per variant",
            "Consistency of the two-hop answer distribution with the one-hop one (0 = identical); "
            "defined on output distributions, so one value per variant.",
            INSIDE,
        ),
    )
}
