"""Task-stratified scaling law of quantized accuracy (Zhou et al., arXiv 2508.18609).

    -ln(Acc_adj) = A * N^alpha * (log2 B_eff)^beta * (log2 C_b)^gamma * G^delta
    Acc_adj = (Acc - chance) / (1 - chance)

fitted by ordinary least squares on logs, one fit per task, with adjusted R^2 on the log
scale, percentile intervals of the exponents from a cluster bootstrap (whole model sizes are
resampled, and seeds within a size when there are several: points of one model share its
training, so they are not independent draws), leave-one-size-out prediction (the law fitted
on the other sizes predicts each size's points: mean absolute error in accuracy), and the
error of predicting the largest model's points from a fit on the smaller ones.

Points the law cannot take are excluded and counted, never clipped: Acc_adj <= 0 (at or
below chance: -ln is undefined) and Acc_adj = 1 (no error: ln 0). Points with excluded bit
widths (2-bit collapses, as in the paper) are left out of the fit but still predicted, so a
plot shows how far the law is from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

FACTORS = ("alpha", "beta", "gamma", "delta")
# Column of the points table behind each exponent, and the transform the law applies to it.
FACTOR_COLUMNS = {"alpha": "n_params", "beta": "b_eff", "gamma": "calibration_size", "delta": "group_size"}
FACTOR_NAMES = {
    "alpha": "model size N",
    "beta": "effective bits B_eff",
    "gamma": "calibration size C_b",
    "delta": "group size G",
}


class ScalingFitError(ValueError):
    """The points cannot identify the law (too few, or a factor that never varies)."""


def adjusted_accuracy(accuracy: np.ndarray | float, chance: np.ndarray | float) -> np.ndarray:
    """(Acc - chance) / (1 - chance): 0 at chance, 1 when every answer is right."""
    accuracy, chance = np.asarray(accuracy, float), np.asarray(chance, float)
    if np.any(chance >= 1):
        raise ValueError("a chance rate of 1 leaves nothing to adjust: check the task's answers")
    return (accuracy - chance) / (1 - chance)


def design_matrix(points: pd.DataFrame) -> np.ndarray:
    """Columns: 1, ln N, ln log2 B_eff, ln log2 C_b, ln G."""
    for column, minimum in (("n_params", 0), ("b_eff", 1), ("calibration_size", 1), ("group_size", 0)):
        if (points[column] <= minimum).any():
            raise ScalingFitError(f"{column} must be > {minimum} for the law's logarithms; got {points[column].min()}")
    return np.column_stack(
        [
            np.ones(len(points)),
            np.log(points["n_params"].to_numpy(float)),
            np.log(np.log2(points["b_eff"].to_numpy(float))),
            np.log(np.log2(points["calibration_size"].to_numpy(float))),
            np.log(points["group_size"].to_numpy(float)),
        ]
    )


@dataclass(frozen=True)
class LawFit:
    """log A and the four exponents, fitted on ``n`` points."""

    log_a: float
    exponents: dict[str, float]
    n: int
    r2: float
    adj_r2: float

    @property
    def coefficients(self) -> np.ndarray:
        return np.array([self.log_a, *(self.exponents[f] for f in FACTORS)])

    def predict_log_loss(self, points: pd.DataFrame) -> np.ndarray:
        """ln(-ln Acc_adj) predicted for each point."""
        return design_matrix(points) @ self.coefficients

    def predict_accuracy(self, points: pd.DataFrame) -> np.ndarray:
        acc_adj = np.exp(-np.exp(self.predict_log_loss(points)))
        return points["chance"].to_numpy(float) + (1 - points["chance"].to_numpy(float)) * acc_adj


def fit_law(points: pd.DataFrame) -> LawFit:
    """Least squares of ln(-ln Acc_adj) on the design matrix; every point must have
    0 < acc_adj < 1 and every factor must vary."""
    y = log_loss(points)
    x = design_matrix(points)
    _check_identified(x, points)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    residual = y - x @ coef
    ss_res, ss_tot = float(residual @ residual), float(((y - y.mean()) ** 2).sum())
    n, p = len(y), x.shape[1] - 1
    r2 = 1 - ss_res / ss_tot if ss_tot > 0 else float("nan")
    adj_r2 = 1 - (1 - r2) * (n - 1) / (n - p - 1)
    return LawFit(float(coef[0]), dict(zip(FACTORS, map(float, coef[1:]))), n, float(r2), float(adj_r2))


def log_loss(points: pd.DataFrame) -> np.ndarray:
    acc_adj = points["acc_adj"].to_numpy(float)
    if np.any((acc_adj <= 0) | (acc_adj >= 1)):
        raise ScalingFitError("the law needs 0 < Acc_adj < 1 at every point: filter with fit_eligibility first")
    return np.log(-np.log(acc_adj))


def _check_identified(x: np.ndarray, points: pd.DataFrame) -> None:
    n, k = x.shape
    if n < k + 1:
        raise ScalingFitError(f"{n} points cannot fit {k} coefficients and leave a residual: add points")
    for factor, column in FACTOR_COLUMNS.items():
        if points[column].nunique() < 2:
            raise ScalingFitError(
                f"{column} takes one value ({points[column].iloc[0]}) among the fitted points, so "
                f"{factor} ({FACTOR_NAMES[factor]}) is not identified: vary it in the sweep"
            )
    if np.linalg.matrix_rank(x) < k:
        raise ScalingFitError("the factors are collinear among the fitted points: vary them independently")


def fit_eligibility(points: pd.DataFrame, exclude_bits: Sequence[int] = ()) -> pd.Series:
    """Why each point is left out of the fit ('' when it is in): 'excluded_bits',
    'at_or_below_chance' (Acc_adj <= 0), 'perfect' (Acc_adj = 1)."""
    reason = pd.Series("", index=points.index, dtype=object)
    reason[points["acc_adj"] >= 1] = "perfect"
    reason[points["acc_adj"] <= 0] = "at_or_below_chance"
    reason[points["bits"].isin(list(exclude_bits))] = "excluded_bits"
    return reason


@dataclass(frozen=True)
class TaskFit:
    task: str
    fit: LawFit
    intervals: dict[str, tuple[float, float]]  # exponent -> (low, high)
    magnitude_intervals: dict[str, tuple[float, float]]  # |exponent| -> (low, high)
    bootstrap_samples: int  # resamples that identified the law
    extrapolation: dict[str, float]  # predicting the largest model from the others
    loso: pd.DataFrame  # leave-one-size-out prediction error per size
    bootstrap_unit: str = "size"  # "size": cluster bootstrap; "point": points resampled


def bootstrap_exponents(
    points: pd.DataFrame, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, int]:
    """Exponent estimates on ``n_boot`` resamples of the *points* (with replacement), for
    comparison only: it treats every point as independent, which understates the spread when
    points share a model. :func:`cluster_bootstrap_exponents` is the one the study uses.
    Resamples in which a factor does not vary are skipped. Returns (samples [k, 4], k)."""
    rng = np.random.default_rng(seed)
    y, x = log_loss(points), design_matrix(points)
    samples = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        coef = _identified_lstsq(x[idx], y[idx])
        if coef is not None:
            samples.append(coef[1:])
    if not samples:
        raise ScalingFitError("no bootstrap resample identified the law: add points")
    return np.array(samples), len(samples)


def _identified_lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    if len(y) <= x.shape[1] or np.linalg.matrix_rank(x) < x.shape[1]:
        return None
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return coef


def cluster_resample(points: pd.DataFrame, rng: np.random.Generator, size_column: str = "model",
                     seed_column: str = "seed") -> np.ndarray:
    """Row positions of one cluster-bootstrap resample: as many model sizes as there are,
    drawn with replacement, each bringing all of its points; when a size was trained with
    more than one seed (``seed_column``), its seeds are drawn with replacement in turn."""
    sizes = points[size_column].to_numpy()
    seeds = points[seed_column].to_numpy() if seed_column in points else np.zeros(len(points))
    unique_sizes = pd.unique(sizes)
    rows = []
    for size in rng.choice(unique_sizes, len(unique_sizes), replace=True):
        in_size = sizes == size
        size_seeds = pd.unique(seeds[in_size])
        for s in rng.choice(size_seeds, len(size_seeds), replace=True) if len(size_seeds) > 1 else size_seeds:
            rows.append(np.flatnonzero(in_size & (seeds == s)))
    return np.concatenate(rows)


# The cluster bootstrap's intervals need this many model sizes in a task's fit (see fit_task).
MIN_CLUSTER_SIZES = 3


def cluster_bootstrap_exponents(
    points: pd.DataFrame, n_boot: int = 1000, seed: int = 0, size_column: str = "model"
) -> tuple[np.ndarray, int]:
    """Exponent estimates on ``n_boot`` cluster resamples (:func:`cluster_resample`);
    resamples that do not identify the law (e.g. one size drawn every time, so N does not
    vary) are skipped. Returns (samples [k, 4], k); with fewer than ``MIN_CLUSTER_SIZES``
    sizes, one row of NaN and k = 0."""
    if points[size_column].nunique() < 2:
        raise ScalingFitError(f"the cluster bootstrap needs at least two model sizes ({size_column}); got one")
    if points[size_column].nunique() < MIN_CLUSTER_SIZES:
        # With two sizes every resample that identifies the law is the sample itself, so the
        # interval would have width 0: report none (NaN), and no verdict rests on it.
        return np.full((1, len(FACTORS)), np.nan), 0
    rng = np.random.default_rng(seed)
    y, x = log_loss(points), design_matrix(points)
    samples = []
    for _ in range(n_boot):
        idx = cluster_resample(points, rng, size_column)
        coef = _identified_lstsq(x[idx], y[idx])
        if coef is not None:
            samples.append(coef[1:])
    if not samples:
        raise ScalingFitError("no cluster-bootstrap resample identified the law: add model sizes")
    return np.array(samples), len(samples)


def percentile_interval(samples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    tail = 100 * (1 - confidence) / 2
    return np.percentile(samples, tail, axis=0), np.percentile(samples, 100 - tail, axis=0)


def extrapolation_error(points: pd.DataFrame) -> dict[str, float]:
    """Fit on every model but the largest, predict the largest one's points: mean absolute
    error in accuracy (percentage points / 100) and RMSE of ln(-ln Acc_adj)."""
    largest = points["n_params"].max()
    train, test = points[points["n_params"] < largest], points[points["n_params"] == largest]
    fit = fit_law(train)
    return {
        "extrapolation_abs_error": float(np.abs(fit.predict_accuracy(test) - test["accuracy"].to_numpy(float)).mean()),
        "extrapolation_log_rmse": float(np.sqrt(((fit.predict_log_loss(test) - log_loss(test)) ** 2).mean())),
        "extrapolation_points": float(len(test)),
    }


def leave_one_size_out(points: pd.DataFrame, size_column: str = "model") -> pd.DataFrame:
    """For each model size: the law fitted on the other sizes' points predicts this size's
    points. One row per size: model, n_params, points, abs_error (mean absolute error in
    accuracy), log_rmse (of ln(-ln Acc_adj)), and ``problem`` (why it could not be fitted,
    '' when it was)."""
    rows = []
    for size, test in points.groupby(size_column, sort=False):
        train = points[points[size_column] != size]
        row = {size_column: size, "n_params": float(test["n_params"].iloc[0]), "points": float(len(test))}
        try:
            fit = fit_law(train)
        except ScalingFitError as error:
            rows.append({**row, "abs_error": float("nan"), "log_rmse": float("nan"), "problem": str(error)})
            continue
        abs_error = np.abs(fit.predict_accuracy(test) - test["accuracy"].to_numpy(float)).mean()
        log_rmse = np.sqrt(((fit.predict_log_loss(test) - log_loss(test)) ** 2).mean())
        rows.append({**row, "abs_error": float(abs_error), "log_rmse": float(log_rmse), "problem": ""})
    return pd.DataFrame(rows).sort_values("n_params", ignore_index=True)


def fit_task(
    points: pd.DataFrame, task: str, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0,
    bootstrap_unit: str = "size",
) -> TaskFit:
    """The law on one task's eligible points, with bootstrap intervals (``bootstrap_unit``
    'size': whole model sizes resampled; 'point': points resampled, which treats points of
    one model as independent), leave-one-size-out errors and extrapolation."""
    fit = fit_law(points)
    if bootstrap_unit == "size":
        samples, used = cluster_bootstrap_exponents(points, n_boot, seed)
    elif bootstrap_unit == "point":
        samples, used = bootstrap_exponents(points, n_boot, confidence, seed)
    else:
        raise ValueError(f"bootstrap_unit must be 'size' or 'point'; got {bootstrap_unit!r}")
    low, high = percentile_interval(samples, confidence)
    mag_low, mag_high = percentile_interval(np.abs(samples), confidence)
    try:
        extrapolation = extrapolation_error(points)
    except ScalingFitError:  # the smaller models alone cannot identify the law
        extrapolation = {"extrapolation_abs_error": float("nan"), "extrapolation_log_rmse": float("nan"),
                         "extrapolation_points": 0.0}
    return TaskFit(
        task=task,
        fit=fit,
        intervals={f: (float(lo), float(hi)) for f, lo, hi in zip(FACTORS, low, high)},
        magnitude_intervals={f: (float(lo), float(hi)) for f, lo, hi in zip(FACTORS, mag_low, mag_high)},
        bootstrap_samples=used,
        extrapolation=extrapolation,
        loso=leave_one_size_out(points),
        bootstrap_unit=bootstrap_unit,
    )


def compare_sensitivity(reference: TaskFit, other: TaskFit) -> dict[str, dict]:
    """Per factor: is ``reference`` more sensitive than ``other``? Sensitivity is the
    exponent's magnitude; the answer is decided only when the bootstrap intervals of the
    magnitudes do not overlap, and is 'undetermined' otherwise."""
    out = {}
    for factor in FACTORS:
        ref_lo, ref_hi = reference.magnitude_intervals[factor]
        oth_lo, oth_hi = other.magnitude_intervals[factor]
        if ref_lo > oth_hi:
            verdict = f"{reference.task}_more_sensitive"
        elif oth_lo > ref_hi:
            verdict = f"{other.task}_more_sensitive"
        else:
            verdict = "undetermined"
        out[factor] = {
            "factor": FACTOR_NAMES[factor],
            "verdict": verdict,
            reference.task: {
                "estimate": reference.fit.exponents[factor],
                "ci": list(reference.intervals[factor]),
                "magnitude_ci": [ref_lo, ref_hi],
            },
            other.task: {
                "estimate": other.fit.exponents[factor],
                "ci": list(other.intervals[factor]),
                "magnitude_ci": [oth_lo, oth_hi],
            },
        }
    return out


# --- the whole study: every task's fit, the tables and the computed conclusion --------------


@dataclass(frozen=True)
class ScalingStudy:
    points: pd.DataFrame  # one row per point and task, with in_fit, observed and predicted loss
    exponents: pd.DataFrame  # task, factor, estimate, ci_low, ci_high, magnitude CI
    metrics: dict[str, float]  # flat, for tracking
    conclusion: dict
    fits: dict[str, TaskFit]


def fit_study(
    points: pd.DataFrame,
    exclude_bits: Sequence[int] = (2,),
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    reference_task: str = "km",
    bootstrap_unit: str = "size",
    min_reference_over_chance: float = 0.0,
) -> ScalingStudy:
    """Fit the law per task on the quantized points (``method != 'fp'``; full-precision rows
    stay in the table as references), then compare every other task with ``reference_task``.

    A model size whose full-precision accuracy on a task is below
    ``min_reference_over_chance`` times the task's chance rate is left out of that task's fit
    (reason 'reference_near_chance'): quantization cannot remove an ability the model does
    not have, so its points would only measure noise around chance.

    ``points`` needs: model, n_params, method, bits, b_eff, group_size, calibration_size,
    task, accuracy, chance."""
    table = points.reset_index(drop=True)
    table["acc_adj"] = adjusted_accuracy(table["accuracy"], table["chance"])
    with np.errstate(divide="ignore", invalid="ignore"):
        table["observed_neg_log_acc_adj"] = np.where(
            (table["acc_adj"] > 0) & (table["acc_adj"] < 1), -np.log(table["acc_adj"].clip(1e-300, 1)), np.nan
        )
    quantized = table["method"] != "fp"
    table["excluded_reason"] = "reference"
    table.loc[quantized, "excluded_reason"] = fit_eligibility(table[quantized], exclude_bits)
    reference = table[~quantized].set_index(["model", "task"])
    ratio = (reference["accuracy"] / reference["chance"]).groupby(level=[0, 1]).mean()
    weak = [key for key, r in ratio.items() if r < min_reference_over_chance]
    weak_rows = quantized & pd.Series(list(zip(table["model"], table["task"])), index=table.index).isin(weak)
    table.loc[weak_rows & (table["excluded_reason"] == ""), "excluded_reason"] = "reference_near_chance"
    table["in_fit"] = table["excluded_reason"] == ""
    table["predicted_neg_log_acc_adj"] = np.nan
    table["predicted_accuracy"] = np.nan

    fits: dict[str, TaskFit] = {}
    # The level of every bootstrap interval below (the report's caption names it).
    metrics: dict[str, float] = {"bootstrap_confidence": float(confidence)}
    problems: dict[str, str] = {}
    for task, rows in table[quantized].groupby("task", sort=False):
        reasons = rows["excluded_reason"]
        metrics.update(
            {
                f"{task}.points": float(len(rows)),
                f"{task}.points_in_fit": float((reasons == "").sum()),
                f"{task}.excluded_at_or_below_chance": float((reasons == "at_or_below_chance").sum()),
                f"{task}.excluded_perfect": float((reasons == "perfect").sum()),
                f"{task}.excluded_bits": float((reasons == "excluded_bits").sum()),
                f"{task}.excluded_reference_near_chance": float((reasons == "reference_near_chance").sum()),
                f"{task}.sizes_in_fit": float(rows.loc[reasons == "", "model"].nunique()),
                f"{task}.chance": float(rows["chance"].mean()),
            }
        )
        try:
            result = fit_task(rows[reasons == ""], task, n_boot, confidence, seed, bootstrap_unit)
        except ScalingFitError as error:
            problems[task] = str(error)
            metrics[f"{task}.fitted"] = 0.0
            continue
        fits[task] = result
        metrics[f"{task}.fitted"] = 1.0
        predictable = rows.index[(rows["b_eff"] > 1) & (rows["calibration_size"] > 1)]
        table.loc[predictable, "predicted_neg_log_acc_adj"] = np.exp(result.fit.predict_log_loss(table.loc[predictable]))
        table.loc[predictable, "predicted_accuracy"] = result.fit.predict_accuracy(table.loc[predictable])
        metrics[f"{task}.log_a"] = result.fit.log_a
        metrics[f"{task}.r2"] = result.fit.r2
        metrics[f"{task}.adj_r2"] = result.fit.adj_r2
        metrics[f"{task}.bootstrap_samples"] = float(result.bootstrap_samples)
        for factor in FACTORS:
            low, high = result.intervals[factor]
            metrics[f"{task}.{factor}"] = result.fit.exponents[factor]
            metrics[f"{task}.{factor}_ci_low"] = low
            metrics[f"{task}.{factor}_ci_high"] = high
        metrics.update({f"{task}.{k}": v for k, v in result.extrapolation.items() if np.isfinite(v)})
        loso = result.loso[result.loso["problem"] == ""]
        metrics.update({f"{task}.loso_abs_error.{m}": e for m, e in zip(loso["model"], loso["abs_error"])})
        if len(loso):
            metrics[f"{task}.loso_abs_error_mean"] = float(loso["abs_error"].mean())
            metrics[f"{task}.loso_abs_error_max"] = float(loso["abs_error"].max())
        metrics[f"{task}.loso_sizes_not_fitted"] = float((result.loso["problem"] != "").sum())

    exponents = pd.DataFrame(
        [
            {
                "task": task,
                "factor": factor,
                "factor_name": FACTOR_NAMES[factor],
                "estimate": f.fit.exponents[factor],
                "ci_low": f.intervals[factor][0],
                "ci_high": f.intervals[factor][1],
                "magnitude_ci_low": f.magnitude_intervals[factor][0],
                "magnitude_ci_high": f.magnitude_intervals[factor][1],
                "adj_r2": f.fit.adj_r2,
                "points_in_fit": f.fit.n,
            }
            for task, f in fits.items()
            for factor in FACTORS
        ],
        columns=["task", "factor", "factor_name", "estimate", "ci_low", "ci_high", "magnitude_ci_low",
                 "magnitude_ci_high", "adj_r2", "points_in_fit"],
    )
    conclusion = conclude(fits, problems, reference_task, confidence, exclude_bits)
    return ScalingStudy(table, exponents, metrics, conclusion, fits)


def conclude(
    fits: dict[str, TaskFit], problems: dict[str, str], reference_task: str, confidence: float, exclude_bits: Sequence[int]
) -> dict:
    """Per other task and factor: whether the reference task (memorization) is more
    sensitive, with both intervals; a task whose law could not be fitted says why."""
    out: dict = {
        "reference_task": reference_task,
        "confidence": confidence,
        "rule": "sensitivity = |exponent|; a task is more sensitive only when the bootstrap "
                "intervals of the magnitudes do not overlap, otherwise 'undetermined'",
        "excluded_bits": list(exclude_bits),
        "comparisons": {},
        "statements": [],
    }
    if reference_task not in fits:
        out["status"] = f"the reference task {reference_task!r} was not fitted: {problems.get(reference_task, 'no points')}"
        out["statements"].append(out["status"])
        return out
    out["status"] = "fitted"
    reference = fits[reference_task]
    for task in sorted(set(fits) | set(problems)):
        if task == reference_task:
            continue
        if task not in fits:
            out["comparisons"][task] = {"status": "not_fitted", "reason": problems[task]}
            out["statements"].append(f"{task}: not fitted ({problems[task]})")
            continue
        comparison = compare_sensitivity(reference, fits[task])
        out["comparisons"][task] = {"status": "fitted", "factors": comparison}
        for factor, c in comparison.items():
            ref, other = c[reference_task], c[task]
            why = "" if all(np.isfinite(ref["ci"] + other["ci"])) else f", no interval with fewer than {MIN_CLUSTER_SIZES} sizes"
            # The verdict compares the intervals of |exponent| (a signed interval that crosses 0
            # can still lie in magnitude wholly above the other task's): show both.
            out["statements"].append(
                f"{c['factor']}: {c['verdict']}{why} (|{factor}| {reference_task} [{ref['magnitude_ci'][0]:.3f}, "
                f"{ref['magnitude_ci'][1]:.3f}] vs {task} [{other['magnitude_ci'][0]:.3f}, {other['magnitude_ci'][1]:.3f}]; "
                f"{reference_task} {factor} = {ref['estimate']:.3f} [{ref['ci'][0]:.3f}, {ref['ci'][1]:.3f}], "
                f"{task} {factor} = {other['estimate']:.3f} [{other['ci'][0]:.3f}, {other['ci'][1]:.3f}])"
            )
    return out


# --- the paper's exponents, side by side ------------------------------------------------------

# Zhou et al., arXiv 2508.18609 (v4, Findings of ACL 2026), main table of exponents (Qwen3
# 0.6B-14B, GPTQ, 3/4/8 bits), as transcribed in a third-party paper note; not checked here
# against the PDF. v4 splits knowledge into L1 memorization (the KM tier), L2 application and
# L3 reasoning (together the KU tier of the earlier version).
PAPER_SOURCE = "Zhou et al., arXiv 2508.18609 v4, table of scaling exponents (Qwen3 0.6B-14B, GPTQ 3/4/8-bit)"
PAPER_EXPONENTS: dict[str, dict[str, float]] = {
    "paper KM (L1 memorization)": {"alpha": -0.315, "beta": -0.964, "gamma": -0.040, "delta": 0.064, "adj_r2": 0.935},
    "paper KU (L2 application)": {"alpha": -0.400, "beta": -1.100, "gamma": -0.030, "delta": 0.075, "adj_r2": 0.950},
    "paper KU (L3 reasoning)": {"alpha": -0.320, "beta": -1.200, "gamma": -0.025, "delta": 0.085, "adj_r2": 0.930},
}


def exponents_vs_paper(exponents: pd.DataFrame, fit_metrics: dict | None = None) -> pd.DataFrame:
    """One row per exponent (and adjusted R^2): each fitted task's estimate with its
    bootstrap interval ("-0.31 [-0.45, -0.20]"), then the paper's values. ``exponents`` is
    the study's exponents table; ``fit_metrics`` (optional) adds leave-one-size-out errors."""
    rows = []
    tasks = list(dict.fromkeys(exponents["task"]))
    for factor in FACTORS:
        row = {"factor": f"{factor} ({FACTOR_NAMES[factor]})"}
        for task in tasks:
            e = exponents[(exponents["task"] == task) & (exponents["factor"] == factor)].iloc[0]
            row[task] = (f"{e['estimate']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}]" if np.isfinite(e["ci_low"])
                         else f"{e['estimate']:.3f} [no interval: < {MIN_CLUSTER_SIZES} sizes]")
        row.update({name: f"{values[factor]:.3f}" for name, values in PAPER_EXPONENTS.items()})
        rows.append(row)
    r2 = {"factor": "adjusted R^2"}
    for task in tasks:
        r2[task] = f"{exponents.loc[exponents['task'] == task, 'adj_r2'].iloc[0]:.3f}"
    r2.update({name: f"{values['adj_r2']:.3f}" for name, values in PAPER_EXPONENTS.items()})
    rows.append(r2)
    if fit_metrics:
        loso = {"factor": "leave-one-size-out abs. error (mean, max)"}
        for task in tasks:
            mean, worst = fit_metrics.get(f"{task}.loso_abs_error_mean"), fit_metrics.get(f"{task}.loso_abs_error_max")
            loso[task] = f"{mean:.3f}, {worst:.3f}" if mean is not None and worst is not None else "-"
        loso.update({name: "0.03-0.09 (MAE, all tiers)" for name in PAPER_EXPONENTS})
        rows.append(loso)
    return pd.DataFrame(rows).set_index("factor")


def loso_table(fit_metrics: dict) -> pd.DataFrame:
    """Leave-one-size-out error per task (rows) and size (columns) from the flat metrics."""
    cells = {}
    for key, value in fit_metrics.items():
        task, sep, rest = key.partition(".loso_abs_error.")
        if sep:
            cells.setdefault(task, {})[rest] = value
    return pd.DataFrame(cells).T
