"""The report's summary table and the sentences that state what the numbers show.

Every sentence is computed from the tables with thresholds from the report settings;
nothing is written by hand, so the words change when the numbers do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd
from pydantic import ConfigDict, Field
from scipy.stats import norm

from ..analysis.statistics import StatisticsSettings, ci_label
from ..quantization.methods import METHODS
from .tables import DRAW_METRICS, StudyTables, draw_spread, headline, layer_metric, neuron_retention, variant_order


class ReportSettings(StatisticsSettings):
    """The reference every variant is compared against, the level of the tests and intervals
    (``alpha``, from :class:`StatisticsSettings`) and the thresholds of the descriptive
    sentences (``report`` in parameters_report.yml)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # By default the full-precision variant, named after its method (the default variants).
    reference: str = next(name for name, method in METHODS.items() if method.full_precision)
    probe_drop_points: float = Field(5.0, ge=0, description="a probe 'falls below fp' beyond this many points")
    entrec_drop_nats: float = Field(1.0, ge=0, description="EntRec 'drops' beyond this many nats")
    cka_threshold: float = Field(0.9, gt=0, le=1, description="representations 'drift' below this linear CKA")
    drift_site: str = "two_hop.resid_post.mention"


def summary_table(tables: StudyTables, settings: ReportSettings) -> pd.DataFrame:
    """One row per variant (reference first, then by effective bits)."""
    ref = settings.reference
    info = headline(tables.recall)
    order = variant_order(tables.recall, ref)
    table = pd.DataFrame(index=pd.Index(order, name="variant"))
    table["method"] = info["method"]
    table["bits"] = info["bits"]
    table["group size"] = info["group_size"]
    table["effective bits"] = info["effective_bits"]
    if "compute_dtype_bits" in info:
        table["compute dtype"] = [_dtype_name(row) for _, row in info.iterrows()]
    if "modules.rtn_fallback_fraction" in info:
        table["modules not by its method"] = _not_by_method(info)
    if "storage_bytes" in info:
        table["storage MB"] = info["storage_bytes"] / 1e6
    for column, metric in (
        ("one-hop recall", "one_hop.accuracy"),
        ("answer log-prob", "one_hop.answer_logprob"),
        ("stored knowledge bits", "stored_bits"),
        ("stored bits per weight", "stored_bits_per_param"),
        ("two-hop seen", "two_hop.seen.accuracy"),
        ("two-hop held-out", "two_hop.held_out.accuracy"),
    ):
        if metric in info:
            table[column] = info[metric]
        if metric.endswith("accuracy") and metric in info:
            table = _with_interval_and_test(table, tables.recall, metric, column, ref, settings.alpha)
    answer = layer_metric(tables.probes, "transfer_accuracy", probe="answer")
    if not answer.empty:
        table[f"answer probe, layer {answer.index.max()}"] = answer.iloc[-1]
    entrec_all = layer_metric(tables.entrec, "entrec_mean", split="all")
    if not entrec_all.empty:
        table[f"EntRec, layer {entrec_all.index.max()}"] = entrec_all.iloc[-1]
    retained = layer_metric(tables.attribution, "top_neurons_retained")
    if ref in retained:
        table[f"{ref}'s top neurons retained"] = retained.sum() / retained[ref].sum()
    cka = layer_metric(tables.drift, "cka", site=settings.drift_site)
    if not cka.empty:
        table[f"CKA, layer {cka.index.max()}"] = cka.iloc[-1]
    cnst = tables.cnst
    table["CnstScore"] = cnst[(cnst["metric"] == "cnst_score") & (cnst["split"] == "all")].set_index("variant")["value"]
    return table


def _with_interval_and_test(table: pd.DataFrame, recall: pd.DataFrame, metric: str, column: str, ref: str,
                            alpha: float) -> pd.DataFrame:
    """Beside ``column``: its 1 - alpha interval over prompts, and its paired difference with the
    reference (points) and Holm-adjusted p (NaN for the reference)."""
    if "ci_low" not in recall:
        return table
    rows = _overall(recall, metric).reindex(table.index)
    table[f"{ci_label(alpha)}, {column}"] = [
        "" if pd.isna(lo) else f"{100 * lo:.1f}-{100 * hi:.1f}%" for lo, hi in zip(rows["ci_low"], rows["ci_high"])
    ]
    table[f"{column} vs {ref} (points)"] = 100 * rows["delta"]
    table[f"Holm p, {column} vs {ref}"] = rows["p_holm"]
    return table


def findings(
    tables: StudyTables, chains_per_split: Mapping[str, int], settings: ReportSettings,
    comparisons: pd.DataFrame | None = None,
) -> list[str]:
    """Sentences on recall, composition, probes, EntRec, neurons, drift and CnstScore. A
    variant loses or gains only where its Holm-adjusted paired test rejects at
    ``settings.alpha``; a method ranks above another only where the pair's own test
    (``comparisons``: variant_comparisons) does."""
    ref = settings.reference
    info = headline(tables.recall)
    if ref not in info.index:
        raise ValueError(
            f"the recall table has no {ref!r} rows: the findings compare every variant against report.reference "
            f"({ref!r}); set report.reference to one of {list(info.index)} or add the variant"
        )
    order = [v for v in variant_order(tables.recall, ref) if v != ref]
    out = [_changes(tables.recall, "one_hop.accuracy", "recalls", "of the one-hop facts", order, settings)]
    out += _composition(info, chains_per_split, ref, settings.alpha)
    for split, what in (("held_out", "of the held-out two-hop chains (latent composition)"),
                        ("seen", "of the two-hop chains seen in training")):
        if f"two_hop.{split}.accuracy" in info:
            out.append(_changes(tables.recall, f"two_hop.{split}.accuracy", "answers", what, order, settings))
    out += [s for s in (_gains(tables.recall, settings),) if s]
    if comparisons is not None:
        out += _rankings(comparisons, settings)
    out += draw_spread_sentences(draw_spread(tables.recall), settings.alpha)
    out += _dtypes_and_fallbacks(info)
    for probe in ("answer", "bridge"):
        sentence = _probe_drop(tables.probes, probe, order, settings)
        if sentence:
            out.append(sentence)
    out += [s for s in (_entrec(tables.entrec, order, settings), _neurons(tables.attribution, order, ref, settings.alpha),
                        _drift(tables.drift, order, settings), _cnst(tables.cnst, order, ref, settings.alpha)) if s]
    return out


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _points(value: float) -> str:
    return f"{value:g} point" + ("" if value == 1 else "s")


def _nats(value: float) -> str:
    return f"{value:g} nat" + ("" if value == 1 else "s")


def _names(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _interval(low: float, high: float, alpha: float) -> str:
    return f"{ci_label(alpha)} {100 * low:.1f}-{100 * high:.1f}%"


def _delta(row: pd.Series) -> str:
    return (f"{100 * row['delta']:+.1f} points [{100 * row['delta_ci_low']:+.1f}, {100 * row['delta_ci_high']:+.1f}], "
            f"Holm p = {row['p_holm']:.2g}")


def _overall(recall: pd.DataFrame, metric: str) -> pd.DataFrame:
    rows = recall[(recall["metric"] == metric)]
    if "relation" in rows:
        rows = rows[rows["relation"].isna()]
    return rows.drop_duplicates("variant").set_index("variant")


def _changes(recall: pd.DataFrame, metric: str, verb: str, what: str, order: list[str], settings: ReportSettings) -> str:
    """The reference's value with its interval, then the variants whose paired test against
    it (Holm-adjusted over the study's variants) finds a loss or a gain, and the rest as
    within the noise of this many prompts."""
    ref, alpha = settings.reference, settings.alpha
    rows = _overall(recall, metric)
    r = rows.loc[ref]
    text = f"{ref} {verb} {_pct(r['value'])} {what}"
    if "ci_low" in rows and not pd.isna(r.get("ci_low")):
        text += f" ({_interval(r['ci_low'], r['ci_high'], alpha)}, {int(r['n'])} prompts)"
    text += "."
    if "p_holm" not in rows:
        return text + " The table carries no paired tests: rerun `kedro run --pipeline=evaluate`."
    tested = [v for v in order if v in rows.index and not pd.isna(rows.loc[v, "p_holm"])]
    if not tested:
        return text
    losses = [v for v in tested if rows.loc[v, "change"] == "loss"]
    gains = [v for v in tested if rows.loc[v, "change"] == "gain"]
    noise = [v for v in tested if v not in losses and v not in gains]
    test = f"paired exact McNemar on the same prompts, Holm-adjusted over {len(tested)} variants, alpha {alpha:g}"
    if losses:
        text += f" {len(losses)} of {len(tested)} variants lose ({test}): " + _names(
            [f"{v} ({_delta(rows.loc[v])})" for v in sorted(losses, key=lambda v: rows.loc[v, "delta"])]) + "."
        test = "same test"
    if gains:
        text += f" {len(gains)} gain ({test}): " + _names(
            [f"{v} ({_delta(rows.loc[v])})" for v in sorted(gains, key=lambda v: -rows.loc[v, "delta"])]) + "."
        test = "same test"
    if noise:
        deltas = 100 * rows.loc[noise, "delta"]
        n = int(rows.loc[noise, "n"].max())
        low, high = f"{deltas.min():+.1f}", f"{deltas.max():+.1f}"
        span = f"{low} to {high} points" if low != high else f"{low} points"
        every = "All " + str(len(noise)) if len(noise) == len(tested) and len(noise) > 1 else _names(noise)
        if len(noise) == len(tested) and len(noise) > 1:
            text += f" {every} variants are within the noise of {n} prompts ({span}; {test})."
        else:
            text += f" {every} {'is' if len(noise) == 1 else 'are'} within the noise of {n} prompts ({span})."
    return text


def draw_spread_table(spread: pd.DataFrame) -> pd.DataFrame:
    """:func:`~.tables.draw_spread` for the report: one row per variant and metric; every
    column but draws and seeds is an accuracy or a difference of accuracies
    (:data:`DRAW_SPREAD_PERCENT`, shown as percentages)."""
    table = pd.DataFrame({
        "variant": spread["variant_group"],
        "metric": spread["metric"].map(DRAW_METRICS).fillna(spread["metric"]),
        "draws": spread["draws"], "seeds": spread["seeds"], "lowest": spread["min"], "highest": spread["max"],
        "range": spread["range"], "SD across draws": spread["sd"],
        "prompt interval half-width": spread["ci_half_width"], "draws differ: Holm p": spread["draws_p_holm"],
    })
    return table.set_index(["variant", "metric"])


DRAW_SPREAD_PERCENT = ["lowest", "highest", "range", "SD across draws", "prompt interval half-width"]


def draw_spread_sentences(spread: pd.DataFrame, alpha: float) -> list[str]:
    """Per headline metric: the variants whose calibration draws differ on the same prompts
    (Cochran's Q, Holm across variants, at ``alpha``) and those whose draws are within the
    noise, each with its values' span across draws (descriptive)."""
    out = []
    for metric, label in DRAW_METRICS.items():
        rows = spread[spread["metric"] == metric]
        if rows.empty:
            continue
        tested = rows["draws_p_holm"].notna()
        differ = rows[tested & (rows["draws_p_holm"] < alpha)]
        within = rows[tested & ~(rows["draws_p_holm"] < alpha)]
        untested = rows[~tested]

        def listed(part: pd.DataFrame) -> str:
            return _names([f"{r.variant_group} ({int(r.draws)} draws, {100 * r.min:.1f}-{100 * r.max:.1f}%"
                           + (f", Holm p = {r.draws_p_holm:.2g}" if not math.isnan(r.draws_p_holm) else "") + ")"
                           for r in part.itertuples()])

        text = f"Across calibration draws, {label} (Cochran's Q on the same prompts): "
        parts = []
        if not differ.empty:
            parts.append(f"the draws differ for {listed(differ)}: for these the calibration sample changes the result")
        if not within.empty:
            parts.append(f"the draws are within the noise for {listed(within)}")
        if not untested.empty:
            parts.append(f"no test for {listed(untested)} (its recall table predates the test: rerun the evaluate "
                         "pipeline)")
        text += "; ".join(parts)
        out.append(text + ".")
    return out


# Correctness metrics whose significant gains answer "does quantization sometimes improve recall?".
def _gains(recall: pd.DataFrame, settings: ReportSettings) -> str | None:
    """How many of the variant-vs-reference comparisons on correctness metrics (one-hop
    overall and per relation, every two-hop readout) are significant gains, and losses."""
    if "change" not in recall:
        return None
    rows = recall[recall["metric"].str.endswith("accuracy") & recall["change"].notna()]
    # two_hop.<split>.r2(r1(e1)).accuracy is two_hop.<split>.accuracy again: counted once.
    rows = rows[rows["metric"].str.startswith(("one_hop.", "two_hop.")) & ~rows["metric"].str.contains("r2(r1(e1))", regex=False)]
    if rows.empty:
        return None
    gains, losses = rows[rows["change"] == "gain"], rows[rows["change"] == "loss"]
    text = (f"Does quantization sometimes improve recall (as Wang et al. report)? Of {len(rows)} comparisons with "
            f"{settings.reference} on correctness (every variant; one-hop overall and per relation, each two-hop "
            f"readout and split; Holm-adjusted per metric), {len(gains)} are significant gains and {len(losses)} "
            f"significant losses")
    if len(gains):
        listed = [f"{r.variant} on {r.metric}{'.' + r.relation if isinstance(r.relation, str) else ''} "
                  f"({100 * r.delta:+.1f} points)" for r in gains.itertuples()]
        return text + ": the gains are " + _names(listed) + "."
    return text + "."


def _rankings(comparisons: pd.DataFrame, settings: ReportSettings) -> list[str]:
    """Per bit width and headline metric, the pairs of variants whose own paired test
    (Holm-adjusted over every same-bits pair of the study) says one keeps more; otherwise
    that no ranking at that width is supported."""
    out = []
    if comparisons.empty:
        return out
    relation = comparisons["relation"] if "relation" in comparisons else pd.Series(None, index=comparisons.index)
    for metric, label in (("one_hop.accuracy", "one-hop recall"), ("two_hop.held_out.accuracy", "held-out composition")):
        rows = comparisons[(comparisons["metric"] == metric) & relation.isna()]
        for bits, group in rows.groupby("bits", sort=True):
            decided = group[group["change"] != "noise"]
            n = int(group["n"].max())
            if decided.empty:
                out.append(f"At {int(bits)} bits, no variant keeps significantly more {label} than another "
                           f"({len(group)} pairs, paired tests on {n} prompts, Holm-adjusted): the data do not rank them.")
                continue
            listed = []
            for r in decided.itertuples():
                high, low = (r.variant_b, r.variant_a) if r.change == "b > a" else (r.variant_a, r.variant_b)
                listed.append(f"{high} above {low} ({100 * abs(r.delta):.1f} points [{100 * min(abs(r.delta_ci_low), abs(r.delta_ci_high)):.1f}, "
                              f"{100 * max(abs(r.delta_ci_low), abs(r.delta_ci_high)):.1f}], Holm p = {r.p_holm:.2g})")
            out.append(f"At {int(bits)} bits, {label} ranks {_names(listed)}; the other {len(group) - len(decided)} "
                       f"of {len(group)} pairs are within the noise of {n} prompts.")
    return out


def _composition(info: pd.DataFrame, chains_per_split: Mapping[str, int], ref: str, alpha: float) -> list[str]:
    """Two-hop accuracy of the reference against chance, with the 1 - alpha band of a model
    that guesses at the chance rate on this many chains (binomial, normal approximation)."""
    z, level = float(norm.ppf(1 - alpha / 2)), f"{100 * (1 - alpha):g}%"
    out = []
    for split, label in (("seen", "seen in training"), ("held_out", "held out (latent composition)")):
        acc, chance = f"two_hop.{split}.accuracy", f"two_hop.{split}.chance"
        n = int(chains_per_split.get(split, 0))
        if acc not in info or chance not in info or n == 0:
            continue
        a, c = float(info.loc[ref, acc]), float(info.loc[ref, chance])
        band = z * math.sqrt(c * (1 - c) / n)
        if a > c + band:
            verdict = f"above chance ({_pct(c)}; {level} band of guessing ±{100 * band:.1f} points over {n} chains)"
        elif a < c - band:
            verdict = f"below chance ({_pct(c)}; {level} band ±{100 * band:.1f} points over {n} chains)"
        else:
            verdict = (f"within the {level} band of chance ({_pct(c)} ±{100 * band:.1f} points over {n} chains): "
                       f"differences between variants on these chains are not evidence about composition")
        out.append(f"On two-hop chains {label}, {ref} answers {_pct(a)}, {verdict}.")
    return out


def _probe_drop(probes: pd.DataFrame, probe: str, order: list[str], settings: ReportSettings) -> str | None:
    ref, points = settings.reference, settings.probe_drop_points
    transfer = layer_metric(probes, "transfer_accuracy", probe=probe)
    if ref not in transfer:
        return None
    chance = layer_metric(probes, "chance", probe=probe).get(ref)
    control = layer_metric(probes, "control_accuracy", probe=probe).get(ref)
    best_layer = int(transfer[ref].idxmax())
    best = float(transfer[ref].max())
    floor = max(float(chance[best_layer]) if chance is not None else 0.0,
                float(control[best_layer]) if control is not None and not pd.isna(control[best_layer]) else 0.0)
    text = f"The {probe} probe trained on {ref} peaks at layer {best_layer} ({_pct(best)}; chance {_pct(chance[best_layer])}"
    text += f", shuffled-label control {_pct(control[best_layer])})" if control is not None else ")"
    if best - floor < points / 100:
        return text + (f": it does not decode above chance by {_points(points)}, so its changes under quantization "
                       f"carry no signal.")
    # A drop counts where it exceeds the threshold and, when the table carries the paired
    # test (McNemar on the same test rows, Holm over the variants per layer), where it is significant.
    holm = layer_metric(probes, "transfer_accuracy", "p_holm", probe=probe)
    tested = not holm.empty
    drops = []
    for variant in order:
        if variant not in transfer:
            continue
        large = (transfer[ref] - transfer[variant]) * 100 > points
        if tested and variant in holm:
            large &= holm[variant].reindex(transfer.index) < settings.alpha
        below = transfer.index[large]
        if len(below):
            drops.append((variant, int(below[0]), 100 * float(transfer.loc[best_layer, ref] - transfer.loc[best_layer, variant])))
    test = f" and significantly (paired McNemar on the test rows, Holm p < {settings.alpha:g})" if tested else ""
    if not drops:
        return text + (f". Applied to every variant, it falls more than {_points(points)}{test} below {ref} at no "
                       f"layer.")
    listed = _names([f"{v} from layer {layer} ({gap:.1f} points lower at layer {best_layer})" for v, layer, gap in drops])
    return text + f". Applied unchanged, it falls more than {_points(points)}{test} below {ref} for {listed}."


def _entrec(entrec: pd.DataFrame, order: list[str], settings: ReportSettings) -> str | None:
    ref, nats = settings.reference, settings.entrec_drop_nats
    curves = layer_metric(entrec, "entrec_mean", split="all")
    if ref not in curves:
        return None
    last = int(curves.index.max())
    at_last = curves.loc[last]
    holm = layer_metric(entrec, "entrec_mean", "p_holm", split="all")
    significant = holm.loc[last] if last in holm.index else None
    drops = [v for v in order if v in at_last and at_last[ref] - at_last[v] > nats
             and (significant is None or significant.get(v, 1.0) < settings.alpha)]
    test = (f" and significantly (paired Wilcoxon over chains, Holm p < {settings.alpha:g})"
            if significant is not None else "")
    text = f"At layer {last}, the bridge entity's mean EntRec is {at_last[ref]:.2f} nats for {settings.reference}"
    low, high = layer_metric(entrec, "entrec_mean", "ci_low", split="all"), layer_metric(entrec, "entrec_mean", "ci_high", split="all")
    if ref in low and last in low.index and not pd.isna(low.loc[last, ref]):
        text += f" ({ci_label(settings.alpha)} {low.loc[last, ref]:.2f} to {high.loc[last, ref]:.2f})"
    if drops:
        return text + f"; it is more than {_nats(nats)}{test} lower for " + _names(
            [f"{v} ({at_last[v]:.2f})" for v in drops]) + "."
    return text + f"; no variant is more than {_nats(nats)}{test} lower."


def _neurons(attribution: pd.DataFrame, order: list[str], ref: str, alpha: float = 0.05) -> str | None:
    """Which variants keep significantly fewer of the reference's top attribution neurons
    above its threshold in some layer (paired Wilcoxon over the attributed prompts, Holm over
    the variants per layer, where the table carries the test), with their overall share;
    without the test, the range of the shares."""
    retained = layer_metric(attribution, "top_neurons_retained")
    variants = [v for v in order if v in retained]
    if ref not in retained or not variants:
        return None
    share = (retained.sum() / retained[ref].sum()).drop(ref)
    text = f"Of {ref}'s top attribution neurons"
    holm = layer_metric(attribution, "top_neurons_retained", "p_holm")
    delta = layer_metric(attribution, "top_neurons_retained", "delta")
    if holm.empty:
        low, high = min(variants, key=lambda v: share[v]), max(variants, key=lambda v: share[v])
        return (text + f", the variants keep {_pct(share[low])} ({low}) to {_pct(share[high])} ({high}) above {ref}'s "
                f"threshold (no paired tests in the table: rerun `kedro run --pipeline=probe`).")
    fewer = [v for v in variants if v in holm and ((holm[v] < alpha) & (delta[v] < 0)).any()]
    kept = [v for v in variants if v not in fewer]
    if fewer:
        worst = min(fewer, key=lambda v: share[v])
        per_layer = neuron_retention(attribution, ref)[worst]
        worst_layer = int(per_layer.idxmin())
        text += (f", {len(fewer)} of {len(variants)} variants keep significantly fewer above {ref}'s threshold in at "
                 f"least one layer (paired Wilcoxon over prompts, Holm p < {alpha:g}): "
                 + _names([f"{v} ({_pct(share[v])} overall)" for v in sorted(fewer, key=lambda v: share[v])])
                 + f"; {worst} keeps {_pct(per_layer[worst_layer])} in decoder layer {worst_layer}, its lowest")
        if kept:
            text += f". {_names(kept)} {'is' if len(kept) == 1 else 'are'} within the noise in every layer"
    else:
        text += (f", every variant keeps as many above {ref}'s threshold as {ref} within the noise, in every layer "
                 f"(paired Wilcoxon over prompts, Holm p >= {alpha:g})")
    return text + "."


def _drift(drift: pd.DataFrame, order: list[str], settings: ReportSettings) -> str | None:
    cka = layer_metric(drift, "cka", site=settings.drift_site)
    variants = [v for v in order if v in cka]
    if not variants:
        return None
    site = settings.drift_site.replace(".resid_post.", " prompts, residual stream at the ")
    below = []
    for v in variants:
        layers = cka.index[cka[v] < settings.cka_threshold]
        if len(layers):
            below.append(f"{v} (from layer {int(layers[0])}, {cka[v].iloc[-1]:.2f} at layer {int(cka.index.max())})")
    if not below:
        return (f"Linear CKA against {settings.reference} ({site}) stays at or above {settings.cka_threshold:g} at every "
                f"layer for every variant.")
    return f"Linear CKA against {settings.reference} ({site}) falls below {settings.cka_threshold:g} for {_names(below)}."


def _cnst(cnst: pd.DataFrame, order: list[str], ref: str, alpha: float = 0.05) -> str | None:
    """CnstScore of the reference with its interval, and the variants whose paired test
    (Wilcoxon over chains, Holm over the variants) finds them less or more consistent."""
    rows = cnst[(cnst["metric"] == "cnst_score") & (cnst["split"] == "all")].set_index("variant")
    variants = [v for v in order if v in rows.index]
    if ref not in rows.index or not variants:
        return None
    text = f"CnstScore (0 = the two-hop answer distribution equals the one-hop one) is {rows.loc[ref, 'value']:.2f} for {ref}"
    if "ci_low" in rows and not pd.isna(rows.loc[ref, "ci_low"]):
        text += f" ({ci_label(alpha)} {rows.loc[ref, 'ci_low']:.2f} to {rows.loc[ref, 'ci_high']:.2f})"
    if "p_holm" not in rows:
        low, high = min(variants, key=lambda v: rows.loc[v, "value"]), max(variants, key=lambda v: rows.loc[v, "value"])
        return text + (f"; among the variants it ranges from {rows.loc[low, 'value']:.2f} ({low}) to "
                       f"{rows.loc[high, 'value']:.2f} ({high}).")
    significant = [v for v in variants if rows.loc[v, "p_holm"] < alpha]
    less = sorted((v for v in significant if rows.loc[v, "delta"] < 0), key=lambda v: rows.loc[v, "value"])
    more = [v for v in significant if rows.loc[v, "delta"] > 0]
    noise = [v for v in variants if v not in significant]
    parts = []
    if less:
        parts.append(f"less consistent (paired Wilcoxon over chains, Holm p < {alpha:g}): "
                     + _names([f"{v} ({rows.loc[v, 'value']:.2f})" for v in less]))
    if more:
        parts.append("more consistent: " + _names([f"{v} ({rows.loc[v, 'value']:.2f})" for v in more]))
    if noise:
        parts.append(f"within the noise: {_names(noise)}")
    return text + "; " + "; ".join(parts) + "."


# (total bits, mantissa bits) of the compute dtypes the footprint records.
_DTYPES = {(32, 23): "float32", (16, 10): "float16", (16, 7): "bfloat16"}


def _dtype_name(row: pd.Series) -> str:
    bits, mantissa = row.get("compute_dtype_bits"), row.get("compute_dtype_mantissa_bits")
    if pd.isna(bits) or pd.isna(mantissa):
        return "not recorded"
    return _DTYPES.get((int(bits), int(mantissa)), f"{int(bits)}-bit")


def _dtypes_and_fallbacks(info: pd.DataFrame) -> list[str]:
    """Whether every variant computes in one dtype, which variants' modules the quantizer
    left to its RTN fallback, and where AWQ's o_proj followed its grouped-query-attention
    rule (or the averaged-scale option), with how many modules."""
    out = []
    if "compute_dtype_bits" in info:
        dtypes = {variant: _dtype_name(row) for variant, row in info.iterrows()}
        if len(set(dtypes.values())) == 1:
            out.append(f"Every variant computes its activations in {next(iter(dtypes.values()))}, so the losses are "
                       "quantization's alone.")
        else:
            groups = {d: [v for v, x in dtypes.items() if x == d] for d in dict.fromkeys(dtypes.values())}
            out.append("Variants compute in different dtypes (" + "; ".join(f"{d}: {_names(v)}" for d, v in groups.items())
                       + "): part of each difference is the dtype's, not quantization's.")
    if "modules.rtn_fallback_fraction" in info:
        missed = _not_by_method(info).dropna()
        missed = missed[missed > 0]
        if len(missed):
            out.append("The quantizer did not apply the named method to " + ", ".join(
                f"{_pct(value)} of {variant}'s modules" for variant, value in missed.items())
                + " (RTN fallback, or no log entry: variant.json lists each module).")
    # AWQ's o_proj under grouped-query attention: the method's own rule (or its averaged-scale
    # option), stated per variant and not counted as "not by its method".
    rules = {
        "modules.awq_unscaled_gqa_fraction": "o_proj unscaled under grouped-query attention ({}), as in the reference AWQ",
        "modules.awq_gqa_average_fraction": "o_proj scaled by its AWQ scale averaged over each key-value head's query "
                                            "heads ({}), instead of the reference AWQ's unscaled o_proj",
    }
    for column, text in rules.items():
        if column not in info:
            continue
        for variant, share in info[column].dropna().items():
            if share <= 0:
                continue
            total = info["quantized_modules"].get(variant) if "quantized_modules" in info else None
            count = (f"{round(share * total)} of {int(total)} modules" if total is not None and not pd.isna(total)
                     else f"{_pct(share)} of its modules")
            out.append(f"{variant}: {text.format(count)}.")
    return out


def _not_by_method(info: pd.DataFrame) -> pd.Series:
    """The share of a variant's modules its quantizer left to its RTN fallback, skipped or did
    not log (``modules.rtn_fallback_fraction`` + ``modules.other_fraction``). AWQ's o_proj
    under grouped-query attention (``modules.awq_unscaled_gqa_fraction``,
    ``modules.awq_gqa_average_fraction``) is the method's own rule and is not counted."""
    other = info["modules.other_fraction"] if "modules.other_fraction" in info else 0.0
    return info["modules.rtn_fallback_fraction"] + pd.Series(other, index=info.index).fillna(0.0)


# ------------------------------------------------------------------ training seeds
def seed_sentences(summary: pd.DataFrame, rankings: pd.DataFrame | None, components: pd.DataFrame | None,
                   alpha: float) -> list[str]:
    """Per headline metric: the variants whose mean change across training seeds is a loss or
    a gain (t-test over seeds, Holm across variants), with how many seeds each one's paired
    tests agree in, and those within the noise; the method rankings that hold in every seed
    and those whose sign flips; and how the variance of the changes splits (descriptive)."""
    out = []
    for metric, label in DRAW_METRICS.items():
        rows = summary[summary["metric"] == metric]
        if rows.empty:
            continue
        seeds = int(rows["seeds"].max())
        changed = rows[rows["change"].isin(["loss", "gain"])]
        items = [f"{r.variant_group} {100 * r.delta_mean:+.1f} points [{100 * r.delta_ci_low:+.1f}, "
                 f"{100 * r.delta_ci_high:+.1f}], Holm p = {r.p_holm:.2g}; a loss in {r.seeds_with_loss} of {r.seeds} "
                 f"seeds" for r in changed.itertuples()]
        text = f"{label.capitalize()} across {seeds} training seeds (t-test over seeds, {ci_label(alpha)}): "
        text += (f"{_names(items)}." if items else f"no variant's mean change is distinguishable from 0 with {seeds} "
                 "seeds.")
        noise = rows[rows["change"] == "noise"]
        if not noise.empty and items:
            text += f" Within the noise across seeds: {_names(list(noise['variant_group']))}."
        every = rows[rows["loss_in_every_seed"]]
        if not every.empty:
            text += f" A significant loss in every seed's own paired tests: {_names(list(every['variant_group']))}."
        out.append(text)
    if rankings is not None and not rankings.empty:
        for metric, label in DRAW_METRICS.items():
            rows = rankings[rankings["metric"] == metric]
            if rows.empty:
                continue
            held = [f"{r.variant_b if r.seeds_b_above_a else r.variant_a} above "
                    f"{r.variant_a if r.seeds_b_above_a else r.variant_b}" for r in rows.itertuples() if r.holds_in_every_seed]
            flips = [f"{r.variant_a} vs {r.variant_b}" for r in rows.itertuples() if not r.same_sign_in_every_seed]
            across = [f"{r.variant_b if r.change == 'b > a' else r.variant_a} above "
                      f"{r.variant_a if r.change == 'b > a' else r.variant_b} ({100 * abs(r.delta_mean):.1f} points "
                      f"[{100 * min(abs(r.delta_ci_low), abs(r.delta_ci_high)):.1f}, "
                      f"{100 * max(abs(r.delta_ci_low), abs(r.delta_ci_high)):.1f}], Holm p = {r.p_holm:.2g})"
                      for r in rows.itertuples() if r.change in ("b > a", "a > b")]
            text = f"{label.capitalize()} rankings at equal bits ({len(rows)} pairs): "
            text += (f"{_names(held)} in every seed's paired tests" if held else "no ranking holds in every seed's paired tests")
            text += (f"; across seeds (t-test, Holm across pairs): {_names(across)}" if across
                     else "; none across seeds (t-test, Holm across pairs)")
            text += "." if not flips else f"; the sign flips between seeds for {_names(flips)}."
            out.append(text)
    if components is not None and not components.empty:
        for metric, label in DRAW_METRICS.items():
            rows = components[(components["metric"] == metric) & components["seeds"].gt(1)]
            if rows.empty:
                continue
            shares = rows[["share_prompts", "share_calibration", "share_seed"]].mean()
            text = (f"Spread of the {label} changes (descriptive, variance components averaged over {len(rows)} "
                    f"variants): prompts {100 * shares['share_prompts']:.0f}%, training seeds "
                    f"{100 * shares['share_seed']:.0f}%")
            calibrated = rows[rows["draws"] > 1]
            if not calibrated.empty:
                cal = calibrated[["share_prompts", "share_calibration", "share_seed"]].mean()
                text += (f"; for the {len(calibrated)} calibrated variants: prompts {100 * cal['share_prompts']:.0f}%, "
                         f"calibration draws {100 * cal['share_calibration']:.0f}%, training seeds "
                         f"{100 * cal['share_seed']:.0f}%")
            out.append(text + ".")
    return out


# Columns of :func:`seed_summary_table` shown as percentages (an accuracy, and its SD in points).
SEED_SUMMARY_PERCENT = ["mean value", "SD across seeds"]


def seed_headline(summary: pd.DataFrame) -> list[str]:
    """The run summary's lines for several training seeds: per headline metric, the variants
    whose mean change across seeds is a loss or gain by the t-test over seeds (Holm)."""
    out = []
    for metric, label in DRAW_METRICS.items():
        rows = summary[summary["metric"] == metric]
        if rows.empty:
            continue
        changed = rows[rows["change"].isin(["loss", "gain"])]
        listed = _names([f"{r.variant_group} {100 * r.delta_mean:+.1f}" for r in changed.itertuples()]) or "none"
        out.append(f"{label} across {int(rows['seeds'].max())} training seeds, changes beyond the seed-to-seed noise "
                   f"(points): {listed}")
    return out


def seed_summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    """:func:`~fkr_kedro.analysis.seeds.seed_summary` for the report (changes in points)."""
    table = pd.DataFrame({
        "variant": summary["variant_group"], "metric": summary["metric"].map(DRAW_METRICS).fillna(summary["metric"]),
        "seeds": summary["seeds"], "draws": summary["draws"],
        "mean value": summary["value_mean"], "SD across seeds": summary["value_sd_across_seeds"],
        "mean change (points)": 100 * summary["delta_mean"], "CI low (points)": 100 * summary["delta_ci_low"],
        "CI high (points)": 100 * summary["delta_ci_high"], "Holm p": summary["p_holm"], "across seeds": summary["change"],
        "each seed": summary["per_seed_delta"], "seeds with a loss": summary["seeds_with_loss"],
    })
    return table.set_index(["variant", "metric"])


def seed_rankings_table(rankings: pd.DataFrame) -> pd.DataFrame:
    table = pd.DataFrame({
        "a": rankings["variant_a"], "b": rankings["variant_b"],
        "metric": rankings["metric"].map(DRAW_METRICS).fillna(rankings["metric"]),
        "b - a in each seed": rankings["per_seed_delta"], "mean b - a (points)": 100 * rankings["delta_mean"],
        "CI low (points)": 100 * rankings["delta_ci_low"], "CI high (points)": 100 * rankings["delta_ci_high"],
        "Holm p": rankings["p_holm"], "across seeds": rankings["change"], "seeds b > a": rankings["seeds_b_above_a"],
        "seeds a > b": rankings["seeds_a_above_b"], "same sign every seed": rankings["same_sign_in_every_seed"],
    })
    return table.set_index(["a", "b", "metric"])


def variance_components_table(components: pd.DataFrame) -> pd.DataFrame:
    def squared_points(values: pd.Series, truncated: pd.Series | None = None) -> pd.Series:
        text = (10_000 * values).map(lambda v: "" if pd.isna(v) else f"{v:.2f}")
        return text.where(~truncated, "0*") if truncated is not None else text

    def with_interval(name: str) -> pd.Series:
        point = squared_points(components[name], components[f"{name}_truncated"])
        low, high = squared_points(components[f"{name}_ci_low"]), squared_points(components[f"{name}_ci_high"])
        return pd.Series([f"{p} [{lo}, {hi}]" if p and lo else p for p, lo, hi in zip(point, low, high)],
                         index=components.index)

    table = pd.DataFrame({
        "variant": components["variant_group"],
        "metric": components["metric"].map(DRAW_METRICS).fillna(components["metric"]),
        "seeds": components["seeds"], "draws": components["draws"],
        "mean change (points)": 100 * components["delta_mean"],
        "prompts": squared_points(components["prompts"]),
        "calibration [95% CI]": with_interval("calibration"),
        "seed [95% CI]": with_interval("seed"),
        "share prompts": components["share_prompts"].map(lambda v: "" if pd.isna(v) else f"{100 * v:.0f}%"),
        "share calibration": components["share_calibration"].map(lambda v: "" if pd.isna(v) else f"{100 * v:.0f}%"),
        "share seed": components["share_seed"].map(lambda v: "" if pd.isna(v) else f"{100 * v:.0f}%"),
    })
    return table.set_index(["variant", "metric"])
