"""The report's summary table and the sentences that state what the numbers show.

Every sentence is computed from the tables with thresholds from the report settings;
nothing is written by hand, so the words change when the numbers do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from .tables import StudyTables, headline, layer_metric, neuron_retention, variant_order


class ReportSettings(BaseModel):
    """Thresholds of the generated sentences (``report`` in parameters_report.yml)."""

    model_config = ConfigDict(extra="forbid")

    reference: str = "fp"
    recall_loss_points: float = Field(1.0, ge=0, description="a variant 'loses recall' beyond this many points")
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
    table["one-hop recall"] = info["one_hop.accuracy"]
    if ref in info.index:
        table[f"one-hop vs {ref} (points)"] = 100 * (info["one_hop.accuracy"] - info.loc[ref, "one_hop.accuracy"])
    for column, metric in (
        ("answer log-prob", "one_hop.answer_logprob"),
        ("stored knowledge bits", "stored_bits"),
        ("stored bits per weight", "stored_bits_per_param"),
        ("two-hop seen", "two_hop.seen.accuracy"),
        ("two-hop held-out", "two_hop.held_out.accuracy"),
    ):
        if metric in info:
            table[column] = info[metric]
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


def findings(tables: StudyTables, chains_per_split: Mapping[str, int], settings: ReportSettings) -> list[str]:
    """Sentences on recall, composition, probes, EntRec, neurons, drift and CnstScore."""
    ref = settings.reference
    info = headline(tables.recall)
    if ref not in info.index:
        raise ValueError(f"the recall table has no {ref!r} rows: the findings compare every variant against it")
    order = [v for v in variant_order(tables.recall, ref) if v != ref]
    out = [_recall_loss(info, order, settings), *_best_per_bits(info, order), *_dtypes_and_fallbacks(info)]
    out += _composition(info, chains_per_split, ref)
    for probe in ("answer", "bridge"):
        sentence = _probe_drop(tables.probes, probe, order, settings)
        if sentence:
            out.append(sentence)
    out += [s for s in (_entrec(tables.entrec, order, settings), _neurons(tables.attribution, order, ref),
                        _drift(tables.drift, order, settings), _cnst(tables.cnst, order, ref)) if s]
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


def _recall_loss(info: pd.DataFrame, order: list[str], settings: ReportSettings) -> str:
    ref, threshold = settings.reference, settings.recall_loss_points
    fp = info.loc[ref, "one_hop.accuracy"]
    loss = {v: 100 * (fp - info.loc[v, "one_hop.accuracy"]) for v in order}
    losers = sorted((v for v in order if loss[v] > threshold), key=lambda v: -loss[v])
    kept = [v for v in order if loss[v] <= threshold]
    text = f"Full precision ({ref}) recalls {_pct(fp)} of the one-hop facts. "
    if losers:
        listed = _names([f"{v} ({-loss[v]:+.1f})" for v in losers])
        text += f"{len(losers)} of {len(order)} quantized variants lose more than {_points(threshold)}: {listed}. "
    else:
        text += f"No quantized variant loses more than {_points(threshold)}. "
    if kept:
        text += f"Within {_points(threshold)} of {ref}: {_names(kept)}."
    return text.strip()


def _best_per_bits(info: pd.DataFrame, order: list[str]) -> list[str]:
    rows = info.loc[order]
    out = []
    for bits, group in rows.dropna(subset=["bits"]).groupby("bits", sort=True):
        if len(group) < 2:
            continue
        ranked = group.sort_values("one_hop.accuracy", ascending=False)
        best, worst = ranked.index[0], ranked.index[-1]
        gap = 100 * (ranked["one_hop.accuracy"].iloc[0] - ranked["one_hop.accuracy"].iloc[-1])
        out.append(
            f"At {int(bits)} bits, {best} keeps the most one-hop recall ({_pct(ranked['one_hop.accuracy'].iloc[0])}) "
            f"and {worst} the least ({_pct(ranked['one_hop.accuracy'].iloc[-1])}), {gap:.1f} points apart."
        )
    return out


def _composition(info: pd.DataFrame, chains_per_split: Mapping[str, int], ref: str) -> list[str]:
    """Two-hop accuracy of the reference against chance, with the 95% band of a model that
    guesses at the chance rate on this many chains (binomial, normal approximation)."""
    out = []
    for split, label in (("seen", "seen in training"), ("held_out", "held out (latent composition)")):
        acc, chance = f"two_hop.{split}.accuracy", f"two_hop.{split}.chance"
        n = int(chains_per_split.get(split, 0))
        if acc not in info or chance not in info or n == 0:
            continue
        a, c = float(info.loc[ref, acc]), float(info.loc[ref, chance])
        band = 1.96 * math.sqrt(c * (1 - c) / n)
        if a > c + band:
            verdict = f"above chance ({_pct(c)}; 95% band of guessing ±{100 * band:.1f} points over {n} chains)"
        elif a < c - band:
            verdict = f"below chance ({_pct(c)}; 95% band ±{100 * band:.1f} points over {n} chains)"
        else:
            verdict = (f"within the 95% band of chance ({_pct(c)} ±{100 * band:.1f} points over {n} chains): "
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
    drops = []
    for variant in order:
        if variant not in transfer:
            continue
        below = transfer.index[(transfer[ref] - transfer[variant]) * 100 > points]
        if len(below):
            drops.append((variant, int(below[0]), 100 * float(transfer.loc[best_layer, ref] - transfer.loc[best_layer, variant])))
    if not drops:
        return text + f". Applied to every variant, it stays within {_points(points)} of {ref} at every layer."
    listed = _names([f"{v} from layer {layer} ({gap:.1f} points lower at layer {best_layer})" for v, layer, gap in drops])
    return text + f". Applied unchanged, it falls more than {_points(points)} below {ref} for {listed}."


def _entrec(entrec: pd.DataFrame, order: list[str], settings: ReportSettings) -> str | None:
    ref, nats = settings.reference, settings.entrec_drop_nats
    curves = layer_metric(entrec, "entrec_mean", split="all")
    if ref not in curves:
        return None
    last = int(curves.index.max())
    at_last = curves.loc[last]
    drops = [v for v in order if v in at_last and at_last[ref] - at_last[v] > nats]
    text = f"At layer {last}, the bridge entity's mean EntRec is {at_last[ref]:.2f} nats for {settings.reference}"
    if drops:
        return text + f"; it is more than {_nats(nats)} lower for " + _names(
            [f"{v} ({at_last[v]:.2f})" for v in drops]) + "."
    return text + f"; no variant is more than {_nats(nats)} lower."


def _neurons(attribution: pd.DataFrame, order: list[str], ref: str) -> str | None:
    retained = layer_metric(attribution, "top_neurons_retained")
    if ref not in retained or not [v for v in order if v in retained]:
        return None
    share = (retained.sum() / retained[ref].sum()).drop(ref)
    share = share[[v for v in order if v in share.index]]
    low, high = share.idxmin(), share.idxmax()
    per_layer = neuron_retention(attribution, ref)[low]
    worst_layer = int(per_layer.idxmin())
    return (f"Of {ref}'s top attribution neurons, {high} keeps the most above {ref}'s threshold ({_pct(share[high])}) "
            f"and {low} the fewest ({_pct(share[low])}; {_pct(per_layer[worst_layer])} in decoder layer {worst_layer}, "
            f"its lowest).")


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


def _cnst(cnst: pd.DataFrame, order: list[str], ref: str) -> str | None:
    scores = cnst[(cnst["metric"] == "cnst_score") & (cnst["split"] == "all")].set_index("variant")["value"]
    variants = [v for v in order if v in scores.index]
    if ref not in scores.index or not variants:
        return None
    low = min(variants, key=lambda v: scores[v])
    high = max(variants, key=lambda v: scores[v])
    return (f"CnstScore (0 = the two-hop answer distribution equals the one-hop one) is {scores[ref]:.2f} for {ref}; "
            f"among the variants it ranges from {scores[low]:.2f} ({low}, least consistent) to {scores[high]:.2f} "
            f"({high}).")


# (total bits, mantissa bits) of the compute dtypes the footprint records.
_DTYPES = {(32, 23): "float32", (16, 10): "float16", (16, 7): "bfloat16"}


def _dtype_name(row: pd.Series) -> str:
    bits, mantissa = row.get("compute_dtype_bits"), row.get("compute_dtype_mantissa_bits")
    if pd.isna(bits) or pd.isna(mantissa):
        return "not recorded"
    return _DTYPES.get((int(bits), int(mantissa)), f"{int(bits)}-bit")


def _dtypes_and_fallbacks(info: pd.DataFrame) -> list[str]:
    """Whether every variant computes in one dtype, and which variants' modules the quantizer
    left to its RTN fallback."""
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
    return out


def _not_by_method(info: pd.DataFrame) -> pd.Series:
    """The share of a variant's modules its quantizer left to its RTN fallback, skipped or did
    not log (``modules.rtn_fallback_fraction`` + ``modules.other_fraction``)."""
    other = info["modules.other_fraction"] if "modules.other_fraction" in info else 0.0
    return info["modules.rtn_fallback_fraction"] + pd.Series(other, index=info.index).fillna(0.0)
