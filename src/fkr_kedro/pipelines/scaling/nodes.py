"""Nodes of the scaling pipeline: the in-context task, one trained model and one sweep per
model size, then the law fitted per task."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from fkr_kedro.knowledge.utilization import in_context_task
from fkr_kedro.knowledge.world import generate_world
from fkr_kedro.parameters import EvaluationSample
from fkr_kedro.pipelines.data_prep.nodes import generate_synthetic_world
from fkr_kedro.pipelines.wiring import by_namespace
from fkr_kedro.quantization.calibration import calibration_texts
from fkr_kedro.reporting.figures import scaling_predicted_vs_observed, scaling_training_curves
from fkr_kedro.scaling.config import ScalingSettings
from fkr_kedro.scaling.fit import fit_study
from fkr_kedro.scaling.sweep import (
    PointCache, TrainedDirectory, TrainedModel, run_sweep, scaling_tasks, train_or_keep, training_summary,
)

log = logging.getLogger(__name__)


def generate_scaling_world(
    scaling: ScalingSettings, evaluation_sample: EvaluationSample
) -> tuple[pd.DataFrame, pd.DataFrame, str, dict]:
    """The scaling study's world (``scaling.world``), made as data_prep makes the default
    study's: evaluation prompts, training corpus and summary."""
    one_hop, two_hop, corpus, summary, _ = generate_synthetic_world(scaling.world, evaluation_sample)
    return one_hop, two_hop, corpus, summary


def build_in_context_task(scaling: ScalingSettings) -> tuple[str, pd.DataFrame]:
    """Training statements (one a line) and evaluation prompts of the in-context task."""
    task = in_context_task(generate_world(scaling.world), scaling.in_context)
    log.info(
        "In-context task: %d training statements, %d evaluation prompts (%d with held-out bridges)",
        len(task.train_statements), len(task.prompts), int((task.prompts["split"] == "held_out_bridge").sum()),
    )
    return "\n".join(task.train_statements) + "\n", task.prompts


def train_scaling_model(
    train_corpus: str, in_context_corpus: str, stored_dir: Path, scaling: ScalingSettings, size: str, seed: int
) -> TrainedDirectory:
    """Train one size here, in the node, unless the model stored at ``stored_dir`` was trained
    with the same shape, settings and corpus (then it is kept). Every model size trains on
    the world's corpus plus the in-context statements, for the same number of exposures per
    statement (``scaling.exposures_per_fact``) when it is set, with training seed ``seed``."""
    corpus = train_corpus.splitlines() + in_context_corpus.splitlines()
    return train_or_keep(stored_dir, corpus, scaling.sizes[size].shape(), scaling.training_for(len(corpus), seed))


def sweep_model(
    model: TrainedModel,
    cache: PointCache,
    train_corpus: str,
    in_context_corpus: str,
    one_hop_prompts: pd.DataFrame,
    two_hop_prompts: pd.DataFrame,
    in_context_prompts: pd.DataFrame,
    scaling: ScalingSettings,
    size: str,
    seed: int,
) -> pd.DataFrame:
    """Every point of the design on this model (size, training seed); points already in the
    cache are read."""
    settings = scaling
    corpus = train_corpus.splitlines() + in_context_corpus.splitlines()
    calibration = calibration_texts(corpus, settings.sweep.calibration_seed)
    result = run_sweep(
        model.path, settings.points(), calibration, scaling_tasks(one_hop_prompts, two_hop_prompts, in_context_prompts),
        cache, model=size, batch_size=settings.sweep.batch_size,
    )
    return result.table.assign(n_params=int(model.record["n_params"]), seed=seed)


def fit_scaling_laws(scaling: ScalingSettings, **size_points: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict, dict]:
    """The law per task, its exponents with bootstrap intervals, flat metrics for tracking,
    and the computed conclusion (memorization vs each utilization task). ``size_points``:
    each model's ``<namespace>.scaling_points`` (several seeds of a size share its ``model``
    name and differ in ``seed``)."""
    fit = scaling.fit
    study = fit_study(
        pd.concat(by_namespace(size_points, "scaling_points").values(), ignore_index=True), fit.exclude_bits,
        fit.bootstrap, fit.confidence, fit.seed, fit.reference_task, fit.bootstrap_unit,
        fit.min_reference_over_chance,
    )
    log.info("Scaling law per task (adjusted R^2, points in fit):\n  %s", "\n  ".join(
        f"{task}: adj R^2 {f.fit.adj_r2:.3f} on {f.fit.n} points; "
        + ", ".join(f"{k} {v:+.3f}" for k, v in f.fit.exponents.items())
        for task, f in study.fits.items()
    ) or "no task could be fitted")
    log.info("Conclusion:\n  %s", "\n  ".join(study.conclusion["statements"]))
    return study.points, study.exponents, study.metrics, study.conclusion


def summarize_training(scaling: ScalingSettings, **trained: TrainedModel) -> tuple[pd.DataFrame, object]:
    """Each model's training (size, seed, steps, exposures per statement, seconds, final loss
    and how much the loss still fell over the last fifth of training) and its loss curve, one
    figure. ``trained``: each namespace's ``scaling_model``."""
    models = scaling.models()
    records = {models[ns]: model.record for ns, model in by_namespace(trained, "scaling_model").items()}
    table = training_summary(records)
    log.info("Scaling models:\n%s", table.to_string(index=False))
    several = len(scaling.training_seeds()) > 1
    labels = {f"{size} seed {seed}" if several else size: record for (size, seed), record in records.items()}
    return table, scaling_training_curves(labels)


def plot_scaling_fit(scaling_points: pd.DataFrame):
    return scaling_predicted_vs_observed(scaling_points)
