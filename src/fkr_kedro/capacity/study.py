"""The capacity sweep: worlds of increasing knowledge load, each trained into every model
size at a fixed number of exposures per fact, each model quantized into every format, and
the stored knowledge bits of every (size, load, exposures, format) point.

Reuses the scaling sweep's machinery: :func:`~fkr_kedro.scaling.sweep.train_or_reuse` keeps a
model already trained with the same shape, settings and corpus; every point's result is a
JSON file of a :class:`~fkr_kedro.scaling.sweep.PointCache` keyed by
:func:`~fkr_kedro.scaling.sweep.point_key` (the spec, the model's weights, the calibration
texts and the facts), so an interrupted sweep resumes where it stopped and a resumed sweep
computes only the missing points.

A world's corpus is one statement per one-hop fact (the relation's first template, which is
the fact's evaluation prompt followed by its object), so exposures per statement are
exposures per fact, as in Physics of LMs 3.3.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from ..analysis.knowledge_bits import measure_knowledge_bits
from ..knowledge.world import generate_world
from ..modeling.exposures import steps_for_exposures
from ..modeling.train import ModelShape
from ..quantization.calibration import calibration_texts
from ..quantization.variants import VariantSpec
from ..scaling.sweep import (
    PointCache,
    Task,
    point_key,
    scratch_variant,
    train_or_reuse,
    weights_sha256,
)
from .config import CapacitySettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Setting:
    """One trained model: a size, a world (its number of people) and the exposures per fact."""

    size: str
    shape: ModelShape
    people: int
    exposures: float

    @property
    def name(self) -> str:
        return f"{self.size}_p{self.people}_e{self.exposures:g}"


def settings_of(capacity: CapacitySettings, sizes: Collection[str] | None = None) -> list[Setting]:
    """Every (exposures, size, load) of the named sizes (all by default), smallest first within each."""
    return [
        Setting(size, spec.shape(), people, exposures)
        for exposures in capacity.exposures
        for size, spec in capacity.sizes.items()
        if sizes is None or size in sizes
        for people in capacity.people
    ]


def world_facts(capacity: CapacitySettings, people: int) -> pd.DataFrame:
    """Every one-hop fact of the world with ``people`` people."""
    return generate_world(capacity.world_for(people)).one_hop_table()


def fact_corpus(facts: pd.DataFrame) -> list[str]:
    """One statement per fact: its evaluation prompt followed by its object."""
    return [f"{p} {o}" for p, o in zip(facts["prompt"], facts["object"])]


def facts_task(facts: pd.DataFrame) -> Task:
    """The facts as a :class:`Task`, whose fingerprint keys the cached points."""
    return Task(
        name="facts", tier="KM", prompts=tuple(facts["prompt"]), answers=tuple(facts["object"]),
        aliases=tuple((o,) for o in facts["object"]), chance=0.0,
    )


def run_capacity(
    capacity: CapacitySettings, models_dir: Path, cache_dir: Path, progress: bool = True,
    sizes: Collection[str] | None = None,
) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """Train every setting of the named sizes (all by default; or reuse it) and measure every
    format's stored bits on it (or read it from the cache). Returns one row per point and the
    point names computed and reused in this call."""
    rows, computed, reused = [], [], []
    specs = capacity.specs()
    for setting in settings_of(capacity, sizes):
        facts = world_facts(capacity, setting.people)
        corpus = fact_corpus(facts)
        training = capacity.training.for_steps(
            steps_for_exposures(len(corpus), capacity.training.batch_size, setting.exposures)
        )
        model_dir = Path(models_dir) / setting.name
        log.info("Capacity %s: %d facts, %d steps", setting.name, len(facts), training.steps)
        record = train_or_reuse(model_dir, corpus, setting.shape, training, progress=progress)
        calibration = calibration_texts(corpus, capacity.calibration_seed)
        cache = PointCache(Path(cache_dir) / setting.name)
        model_sha, task = weights_sha256(model_dir), facts_task(facts)
        for spec in tqdm(specs, desc=f"capacity {setting.name}", disable=not progress):
            key = point_key(spec, model_sha, calibration, [task])
            point = cache.get(spec.name, key)
            if point is None:
                point = _compute_point(model_dir, spec, calibration, facts, capacity.batch_size)
                cache.put(spec.name, key, point)
                computed.append(f"{setting.name}/{spec.name}")
                log.info("%s %s: %.0f of %.0f bits (%.1f s)", setting.name, spec.name, point["stored_bits"],
                         point["load_bits"], point["seconds"])
            else:
                reused.append(f"{setting.name}/{spec.name}")
            rows.append(
                {
                    "setting": setting.name, "size": setting.size, "people": setting.people,
                    "exposures": setting.exposures, "steps": training.steps, "n_params": record["n_params"],
                    "final_loss": record["final_loss"], "variant": spec.name, "method": spec.method,
                    "bits": spec.bits, **{k: v for k, v in point.items() if k not in ("key", "by_relation")},
                }
            )
    return pd.DataFrame(rows), {"computed": computed, "reused": reused}


def _compute_point(model_dir: Path, spec: VariantSpec, calibration: list[str], facts: pd.DataFrame, batch_size: int) -> dict:
    start = time.perf_counter()
    with scratch_variant(model_dir, spec, calibration) as (lm, fp):
        bits = measure_knowledge_bits(
            lm.model, lm.tokenizer, facts, fp.quantized_weights, fp.effective_bits * fp.quantized_weights, batch_size
        )
    return {
        "b_eff": fp.effective_bits,
        "quantized_weights": fp.quantized_weights,
        "stored_bits": bits.stored_bits,
        "load_bits": bits.load_bits,
        "stored_bits_per_param": bits.stored_bits / fp.quantized_weights,
        "stored_bits_per_weight_bit": bits.stored_bits / (fp.effective_bits * fp.quantized_weights),
        "by_relation": bits.by_relation.to_dict(orient="records"),
        "seconds": time.perf_counter() - start,
    }


# --- summaries -----------------------------------------------------------------------------


def saturation_table(points: pd.DataFrame, flat_tolerance: float = 0.1) -> pd.DataFrame:
    """Per (exposures, size, variant): the stored bits at saturation (the most over the
    loads), in bits per parameter, the share of full precision's kept there, whether the
    variant stays within 5% of full precision at every load, and whether full precision's
    curve flattened (its last load step raised the stored bits by less than
    ``flat_tolerance`` while the load grew)."""
    rows = []
    for (exposures, size), part in points.groupby(["exposures", "size"], sort=True):
        fp = part[part["variant"] == "fp"].sort_values("load_bits").set_index("people")
        if fp.empty:
            raise ValueError(f"capacity points of {size} at {exposures:g} exposures have no fp reference")
        fp_max = float(fp["stored_bits"].max())
        last, before = fp["stored_bits"].iloc[-1], fp["stored_bits"].iloc[-2] if len(fp) > 1 else float("nan")
        flattened = bool(len(fp) > 1 and last < (1 + flat_tolerance) * before)
        for variant, rows_v in part.groupby("variant", sort=False):
            rows_v = rows_v.set_index("people").sort_index()
            best = float(rows_v["stored_bits"].max())
            ratio = rows_v["stored_bits"] / fp["stored_bits"].reindex(rows_v.index)
            rows.append(
                {
                    "exposures": exposures, "size": size, "n_params": int(rows_v["quantized_weights"].iloc[0]),
                    "variant": variant, "method": rows_v["method"].iloc[0], "b_eff": float(rows_v["b_eff"].iloc[0]),
                    "saturation_bits": best, "bits_per_param": best / float(rows_v["quantized_weights"].iloc[0]),
                    "kept_vs_fp": best / fp_max if fp_max else float("nan"),
                    "min_ratio_vs_fp": float(ratio.min()),
                    "max_ratio_vs_fp": float(ratio.max()),
                    "within_5pct_every_load": bool(((ratio - 1).abs() <= 0.05).all()),
                    "fp_flattened": flattened,
                    "max_load_bits": float(rows_v["load_bits"].max()),
                }
            )
    return pd.DataFrame(rows)


def capacity_conclusion(saturation: pd.DataFrame) -> dict:
    """Computed sentences: per exposures and size, full precision's bits per parameter at
    saturation (and whether its curve flattened), int8 against full precision at every load,
    and what the 4-, 3- and 2-bit formats keep at saturation."""
    statements = []
    for (exposures, size), part in saturation.groupby(["exposures", "size"], sort=True):
        part = part.set_index("variant")
        fp = part.loc["fp"]
        statements.append(
            f"{size} ({int(fp['n_params']):,} weights), {exposures:g} exposures per fact: full precision stores at most "
            f"{fp['saturation_bits']:,.0f} bits, {fp['bits_per_param']:.3f} bits per parameter, "
            + ("and its curve flattens within the swept loads." if fp["fp_flattened"]
               else "and its curve still rises at the largest load (not saturated).")
        )
        for variant in [v for v in part.index if v != "fp"]:
            row = part.loc[variant]
            if row["method"] == "bnb_int8":
                statements.append(
                    f"  {variant} is {'within' if row['within_5pct_every_load'] else 'NOT within'} 5% of full "
                    f"precision at every load (its stored bits are {row['min_ratio_vs_fp']:.1%} to "
                    f"{row['max_ratio_vs_fp']:.1%} of full precision's)."
                )
        low = part[part["b_eff"] < 6].sort_values("b_eff", ascending=False)
        if len(low):
            statements.append(
                "  At saturation, " + "; ".join(
                    f"{v} ({r['b_eff']:.2f} bits) keeps {r['kept_vs_fp']:.1%} ({r['bits_per_param']:.3f} bits/param)"
                    for v, r in low.iterrows()
                ) + "."
            )
    return {"statements": statements}


FOUR_BIT_METHODS = ("bnb_nf4", "bnb_fp4")


def four_bit_rows(saturation: pd.DataFrame) -> pd.DataFrame:
    """The saturation rows of 4-bit formats (GPTQ/RTN/AWQ at 4 bits, bitsandbytes NF4/FP4)."""
    by_name = saturation["variant"].str.contains(r"_w4_") | saturation["method"].isin(FOUR_BIT_METHODS)
    return saturation[by_name]


def default_load_sentences(
    world_summary: dict | None, recall_by_variant: pd.DataFrame, saturation: pd.DataFrame | None, reference: str = "fp"
) -> list[str]:
    """The default world's knowledge load beside the measured capacity: its bits per weight
    of the study's model against the bits per parameter that 4-bit formats keep at
    saturation in the capacity study (the lowest over sizes at the most exposures), and
    whether the default sits below it."""
    if not world_summary or "knowledge_bits" not in world_summary:
        return []
    load = float(world_summary["knowledge_bits"])
    head = recall_by_variant[recall_by_variant["relation"].isna()]
    ref = head[head["variant"] == reference].set_index("metric")["value"]
    if "quantized_weights" not in ref:
        return [f"The default world's knowledge load is {load:,.0f} bits."]
    weights = float(ref["quantized_weights"])
    lines = [
        f"The default world's knowledge load is {load:,.0f} bits, {load / weights:.3f} bits per weight of the "
        f"study's {weights:,.0f} quantizable weights"
        + (f"; {reference} stores {ref['stored_bits']:,.0f} of them ({ref['stored_bits'] / load:.1%})." if "stored_bits" in ref else ".")
    ]
    if saturation is None or saturation.empty:
        return lines
    most = saturation[saturation["exposures"] == saturation["exposures"].max()]
    four = four_bit_rows(most)
    if four.empty:
        return lines
    low = four.sort_values("bits_per_param").iloc[0]
    # Saturated means: full precision's curve flattened for the size this lowest row comes from
    # (otherwise its bits per parameter are a lower bound of that size's 4-bit capacity).
    low_ref = most[(most["variant"] == reference) & (most["size"] == low["size"])]
    saturated = bool(low_ref["fp_flattened"].any())
    kept = float(low["bits_per_param"])
    ratio = (load / weights) / kept if kept else float("inf")
    lines.append(
        f"In the capacity study ({low['exposures']:g} exposures per fact), 4-bit formats keep "
        f"{'' if saturated else 'at least '}{kept:.3f} bits per parameter at the largest load (lowest: "
        f"{low['variant']} on {low['size']}; {'saturated' if saturated else 'full precision not yet saturated, so capacity is at least this'}). "
        f"The default's load is {ratio:.2f} times that: "
        + ("below what 4-bit formats keep, so a 4-bit format has room for all of it, consistent with one-hop recall "
           "surviving 4 bits." if ratio < 1 else
           "above what 4-bit formats keep, so 4-bit formats must lose some of it." if saturated else
           "above the most the capacity study saw 4-bit formats keep, but that study did not saturate, so whether the "
           "default exceeds 4-bit capacity is not decided by these numbers.")
        + " (Capacity models and the default model differ in shape and exposures; bits per parameter is the unit "
        "Physics of LMs 3.3 finds comparable across sizes.)"
    )
    return lines
