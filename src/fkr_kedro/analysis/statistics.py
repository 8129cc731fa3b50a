"""Uncertainty of every reported proportion and mean, and paired tests between variants.

What the intervals capture is the sampling of prompts (or probe test rows): another draw of
the same number of facts from the same world. They do not capture another calibration draw
or another trained model (docs/statistics.md). Well-kept implementations only:

* proportions: Wilson score interval (``statsmodels.stats.proportion.proportion_confint``);
* means: percentile bootstrap over prompts (``scipy.stats.bootstrap``);
* paired differences (variant minus reference, on the same prompts): a paired percentile
  bootstrap interval; for correctness the exact McNemar test on the discordant prompts
  (``statsmodels.stats.contingency_tables.mcnemar(exact=True)``), for continuous scores the
  Wilcoxon signed-rank test (``scipy.stats.wilcoxon``);
* many comparisons: Holm's step-down adjustment (``statsmodels.stats.multitest.multipletests``).

``stderr`` is the sample standard deviation over sqrt(n), as lm-evaluation-harness logs it
beside every metric (``<metric>_stderr``).
"""

from __future__ import annotations

import gc
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint


class StatisticsSettings(BaseModel):
    """Level and bootstrap of every interval and test (``report`` in parameters_report.yml)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    alpha: float = Field(0.05, gt=0, lt=1, description="two-sided level: 95% intervals, tests at 5%")
    bootstrap_resamples: int = Field(2000, ge=100, description="resamples of every bootstrap interval")
    bootstrap_seed: int = 0


def ci_label(alpha: float) -> str:
    """``95% CI`` for alpha 0.05."""
    return f"{100 * (1 - alpha):g}% CI"


@dataclass(frozen=True)
class Estimate:
    """A proportion or mean over ``n`` prompts with its interval and standard error."""

    value: float
    ci_low: float
    ci_high: float
    stderr: float
    n: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Comparison:
    """``variant - reference`` on the same ``n`` prompts: the difference, its paired bootstrap
    interval and the test's p-value (McNemar for correctness, Wilcoxon otherwise).
    ``gained``/``lost``: prompts right only for the variant / only for the reference (the
    discordant pairs; NaN for continuous scores)."""

    delta: float
    delta_ci_low: float
    delta_ci_high: float
    p_value: float
    n: int
    gained: float = math.nan
    lost: float = math.nan
    test: str = ""
    # The standard error of ``delta`` over prompts (SD of the per-prompt differences / sqrt(n)):
    # the prompt-noise term of the variance components across seeds and calibration draws.
    delta_stderr: float = math.nan

    def as_dict(self) -> dict:
        return asdict(self)


NAN_ESTIMATE = Estimate(math.nan, math.nan, math.nan, math.nan, 0)
NAN_COMPARISON = Comparison(math.nan, math.nan, math.nan, math.nan, 0)


def is_binary(values: np.ndarray) -> bool:
    values = np.asarray(values)
    return values.dtype == bool or bool(np.isin(values[~np.isnan(values.astype(float))], (0.0, 1.0)).all())


def _clean(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    return array[~np.isnan(array)]


def stderr(values: Sequence[float]) -> float:
    """Standard error of the mean (sample standard deviation / sqrt(n)); NaN below 2 values."""
    array = _clean(values)
    return float(array.std(ddof=1) / math.sqrt(len(array))) if len(array) > 1 else math.nan


def proportion(correct: Sequence[bool], settings: StatisticsSettings = StatisticsSettings()) -> Estimate:
    """Share of true values with its Wilson score interval."""
    array = _clean(correct)
    n = len(array)
    if n == 0:
        return NAN_ESTIMATE
    successes = int(array.sum())
    low, high = proportion_confint(successes, n, alpha=settings.alpha, method="wilson")
    return Estimate(successes / n, float(low), float(high), stderr(array), n)


def _resample(data: tuple[np.ndarray, ...], statistic, settings: StatisticsSettings, paired: bool):
    """scipy's percentile bootstrap of ``statistic`` over the rows of ``data``: the one call
    every interval of this module makes."""
    return stats.bootstrap(
        data, statistic, paired=paired, vectorized=True, n_resamples=settings.bootstrap_resamples,
        confidence_level=1 - settings.alpha, method="percentile",
        rng=np.random.default_rng(settings.bootstrap_seed),
    )


def _bootstrap(data: tuple[np.ndarray, ...], statistic, settings: StatisticsSettings, paired: bool) -> tuple[float, float]:
    if len(data[0]) < 2:
        return math.nan, math.nan
    interval = _resample(data, statistic, settings, paired).confidence_interval
    return float(interval.low), float(interval.high)


def mean(values: Sequence[float], settings: StatisticsSettings = StatisticsSettings()) -> Estimate:
    """Mean with its percentile bootstrap interval over the values."""
    array = _clean(values)
    if len(array) == 0:
        return NAN_ESTIMATE
    low, high = _bootstrap((array,), lambda x, axis=-1: x.mean(axis=axis), settings, paired=False)
    return Estimate(float(array.mean()), low, high, stderr(array), len(array))


def bootstrap_estimate(data: Sequence[Sequence], statistic, settings: StatisticsSettings = StatisticsSettings(),
                       paired: bool = False, centred: bool = False) -> Estimate:
    """Any vectorized ``statistic(*data, axis=-1)`` with its percentile bootstrap interval over
    the rows of ``data`` (e.g. of row indices, for a statistic of whole matrices such as CKA);
    ``stderr`` is the bootstrap standard deviation. ``centred``: the percentile interval of the
    resamples' deviations from their own mean, placed around the value (the statistic's spread
    over prompt samples without the shift that resampling itself causes in statistics biased
    at small n, such as CKA, whose resamples repeat prompts)."""
    data = tuple(np.asarray(d) for d in data)
    n = len(data[0])
    value = float(statistic(*data, axis=-1)) if n else math.nan
    if n < 2 or math.isnan(value):
        return Estimate(value, math.nan, math.nan, math.nan, n)
    result = _resample(data, statistic, settings, paired)
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if centred:
        shift = value - float(np.mean(result.bootstrap_distribution))
        low, high = low + shift, high + shift
    return Estimate(value, low, high, float(result.standard_error), n)


def ratio_of_sums(numerators: Sequence[float], denominators: Sequence[float],
                  settings: StatisticsSettings = StatisticsSettings()) -> Estimate:
    """sum(numerators) / sum(denominators) with a cluster bootstrap interval: each cluster
    (a row here, e.g. one entity's test rows) is resampled whole. ``stderr`` is the bootstrap
    standard deviation."""
    num, den = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
    if len(num) == 0 or den.sum() == 0:
        return NAN_ESTIMATE
    return bootstrap_estimate((num, den), lambda a, b, axis=-1: a.sum(axis=axis) / b.sum(axis=axis), settings,
                              paired=True)


def estimate(values: Sequence[float], settings: StatisticsSettings = StatisticsSettings()) -> Estimate:
    """:func:`proportion` for 0/1 values, :func:`mean` otherwise."""
    array = np.asarray(values)
    return proportion(array, settings) if is_binary(array) else mean(array, settings)


def paired(reference: Sequence[float], variant: Sequence[float],
           settings: StatisticsSettings = StatisticsSettings()) -> Comparison:
    """``variant - reference`` on the same prompts (row i of both is one prompt). Correctness
    (0/1): exact McNemar on the discordant prompts; otherwise Wilcoxon signed-rank (p = 1
    when every difference is 0). Rows missing in either are dropped."""
    ref, var = np.asarray(reference, dtype=float), np.asarray(variant, dtype=float)
    if ref.shape != var.shape:
        raise ValueError(f"paired comparison needs one value per prompt on both sides: {ref.shape} vs {var.shape}")
    keep = ~(np.isnan(ref) | np.isnan(var))
    ref, var = ref[keep], var[keep]
    n = len(ref)
    if n == 0:
        return NAN_COMPARISON
    delta = float(var.mean() - ref.mean())
    # Resampling prompts with both variants' values together (a paired bootstrap) resamples
    # the per-prompt differences: the mean difference is the mean of those.
    low, high = _bootstrap((var - ref,), lambda d, axis=-1: d.mean(axis=axis), settings, paired=False)
    if is_binary(ref) and is_binary(var):
        gained, lost = int(((var == 1) & (ref == 0)).sum()), int(((var == 0) & (ref == 1)).sum())
        both, neither = int(((var == 1) & (ref == 1)).sum()), int(((var == 0) & (ref == 0)).sum())
        p = float(mcnemar([[both, lost], [gained, neither]], exact=True).pvalue) if gained + lost else 1.0
        return Comparison(delta, low, high, p, n, gained, lost, "mcnemar_exact", stderr(var - ref))
    differences = var - ref
    p = float(stats.wilcoxon(differences).pvalue) if np.any(differences != 0) else 1.0
    return Comparison(delta, low, high, p, n, test="wilcoxon", delta_stderr=stderr(differences))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values (NaN stays NaN and does not count as a test)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    finite = ~np.isnan(p)
    if finite.any():
        # statsmodels' Holm calls gc.collect() every time (0.5 s in a Kedro run holding models,
        # 22 s over the probe summaries of the test study): with the existing objects frozen
        # that collection only scans what is newer.
        gc.freeze()
        try:
            out[finite] = multipletests(p[finite], method="holm")[1]
        finally:
            gc.unfreeze()
    return out


def add_holm(table: pd.DataFrame, by: Sequence[str], p_column: str = "p_value", out: str = "p_holm") -> pd.DataFrame:
    """``table`` with ``out``: Holm adjustment of ``p_column`` within each group of ``by``
    (one family of tests: e.g. every variant against the reference on one metric)."""
    table = table.copy()
    table[out] = np.nan
    if table.empty:
        return table
    for _, family in table.groupby(list(by), dropna=False, sort=False):
        table.loc[family.index, out] = holm(family[p_column].to_numpy())
    return table


def verdict(comparison: Comparison | pd.Series, p_adjusted: float, alpha: float) -> str:
    """``gain``, ``loss`` or ``noise``: a change only when the adjusted test rejects at ``alpha``."""
    delta = comparison["delta"] if isinstance(comparison, pd.Series) else comparison.delta
    if np.isnan(p_adjusted) or p_adjusted >= alpha or delta == 0:
        return "noise"
    return "gain" if delta > 0 else "loss"
