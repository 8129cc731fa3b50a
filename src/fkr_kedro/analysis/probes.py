"""Per-layer linear probes on captured hidden states, with splits held out BY ENTITY.

An entity-held-out split cannot decode the entity's own identity (a class never seen in
training cannot be predicted), so each probe decodes an ATTRIBUTE that many entities share,
from the representation of entities the probe never saw:

=================  ==============================  ========  ==========  =====================
probe              activations                     label     groups      control strata
=================  ==============================  ========  ==========  =====================
``subject``        one-hop, subject's last token   object    subject     relation
``bridge``         two-hop, mention's last token   e2        e1          r1
``answer``         one-hop, last prompt token      object    subject     relation
``answer_two_hop`` two-hop, last prompt token      e3        e1          composition
=================  ==============================  ========  ==========  =====================

* ``subject``: does the residual at the subject carry the subject's attribute (the object of
  the prompt's relation)? No test subject is in training, so the probe cannot memorise
  subject -> object; it succeeds only if the model writes the attribute into the subject's
  representation in a linearly shared way (attribute extraction, as in Physics of LMs 3.1).
* ``bridge``: is the bridge e2 resolved at the end of the descriptive mention ("the birth city
  of Kato Rilan")? The same bridge is reached from many e1, so e2 is a class with many
  examples; grouping by e1 keeps every test mention unseen (all chains of an e1, whatever the
  composition, fall on one side). Mentions of one relation can only name entities of its
  range, so the relation type alone beats the majority-class rate: the shuffled-label control
  permutes labels within r1, which keeps that type information and shows the honest floor.
* ``answer`` / ``answer_two_hop``: is the answer linearly present at the last token?

Every probe is a ``StandardScaler`` + multinomial ``LogisticRegression`` trained on the
reference (full-precision) model's activations of the training entities; the SAME fitted
pipeline is applied unchanged to each variant's activations of the test entities
(``transfer_accuracy``: how far the representation drifted), and a probe is also trained
per variant on the same split (``accuracy``). Labels with fewer than ``min_class_count``
examples are dropped; test labels unseen in training stay in (they count as errors).
``chance`` is the majority-class rate of the test split; ``control_accuracy`` is the
reference probe retrained on labels shuffled (within strata) in the training split.

Uncertainty (:mod:`fkr_kedro.analysis.statistics`). The accuracies (``accuracy``,
``transfer_accuracy``, ``control_accuracy``) carry ``ci_low``/``ci_high`` (1 - alpha) and
``stderr``: a CLUSTER bootstrap over the test groups (``ratio_of_sums`` of each test entity's
correct rows over its rows, every entity resampled whole), since the rows of one entity (the
probe's ``group``: the subject's relations, the chains of one e1) are not independent. The
interval captures the sampling of test entities for this one split and fitted probe; not
another split, another probe fit or another trained model. Every non-reference variant's
``transfer_accuracy`` (the reference's probe applied to both, on the same test rows) and
``accuracy`` (its own probe against the reference's own) carry ``delta`` (variant minus
reference), its paired bootstrap interval, the exact McNemar ``p_value`` on the per-row
correctness and ``p_holm``, Holm-adjusted over the variants within each (probe, layer,
metric). The paired interval and test treat the test rows as independent (McNemar has no
cluster form here), so they are somewhat optimistic where one entity's rows agree. Rows these
do not apply to (``chance``, ``n_train``, ``n_test``, ``n_classes``, the reference's own
comparison) hold NaN.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import ConfigDict, NonNegativeInt, PositiveInt
from pydantic.dataclasses import dataclass as pydantic_dataclass
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupShuffleSplit
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from .capture import ActivationCache, check_aligned
from .statistics import (
    NAN_COMPARISON,
    NAN_ESTIMATE,
    Comparison,
    Estimate,
    StatisticsSettings,
    add_holm,
    paired,
    ratio_of_sums,
)

# The columns of a probe results table: the tidy key and value, the value's interval, and the
# comparison with the reference (NaN where they do not apply).
ESTIMATE_COLUMNS = ("ci_low", "ci_high", "stderr")
COMPARISON_COLUMNS = ("delta", "delta_ci_low", "delta_ci_high", "p_value", "p_holm")
COLUMNS = ["variant", "layer", "probe", "metric", "value", *ESTIMATE_COLUMNS, *COMPARISON_COLUMNS]


@dataclass(frozen=True)
class ProbeSpec:
    name: str
    site: str  # cache key, e.g. "one_hop.resid_post.subject"
    table: str  # "one_hop" or "two_hop": the table whose rows the site's rows follow
    label: str  # column decoded
    group: str  # column whose values never straddle train and test
    strata: str | None = None  # column within which the control shuffles labels


# The subject and answer probes decode the FIRST TOKEN of the entity (as the tokenizer splits
# it, read from the capture), the token the model must produce next: with multi-token names
# the residual stream at the last prompt token holds the first token, not the whole name (on
# the default model the answer probe decodes the first token at 98% and the whole name at
# 29%). The bridge probe decodes the bridge entity itself: at the mention's end the model is
# not about to name it, and a first-token label would merge bridges that share a name part
# (30 place parts name 100 cities) and put chance near 10%.
TOKEN_LABELS = {
    # table: {label column: cache key of its first-token ids}
    "one_hop": {"object_token": "one_hop.answer_token"},
    "two_hop": {"e3_token": "two_hop.answer_token"},
}

DEFAULT_PROBES: tuple[ProbeSpec, ...] = (
    ProbeSpec("subject", "one_hop.resid_post.subject", "one_hop", "object_token", "subject", "relation"),
    ProbeSpec("bridge", "two_hop.resid_post.mention", "two_hop", "e2", "e1", "r1"),
    ProbeSpec("answer", "one_hop.resid_post.last", "one_hop", "object_token", "subject", "relation"),
    ProbeSpec("answer_two_hop", "two_hop.resid_post.last", "two_hop", "e3_token", "e1", "composition"),
)


def with_token_labels(table_name: str, table: pd.DataFrame, cache: ActivationCache) -> pd.DataFrame:
    """``table`` with the first-token label columns of :data:`TOKEN_LABELS` the cache holds."""
    columns = {
        column: cache[key].numpy() for column, key in TOKEN_LABELS.get(table_name, {}).items() if key in cache
    }
    return table.reset_index(drop=True).assign(**columns)


@pydantic_dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class ProbeConfig:
    test_size: float = 0.25
    seed: int = 0
    C: float = 1.0
    max_iter: PositiveInt = 300
    min_class_count: PositiveInt = 2
    layers: tuple[NonNegativeInt, ...] | None = None  # None: every layer (0 = embeddings)
    max_rows: PositiveInt | None = 20000  # subsample whole groups above this many rows
    train_per_variant: bool = True
    control: bool = True
    # BLAS threads while fitting: "auto" = 1 below 1024 features (multithreaded BLAS on small
    # matrices is all overhead, 20-50x slower on a busy 2-core machine), else left alone.
    blas_threads: int | str | None = "auto"

    def __post_init__(self) -> None:
        if not 0.0 < self.test_size < 1.0:
            raise ValueError(f"test_size must lie in (0, 1), got {self.test_size}")
        if self.C <= 0:
            raise ValueError(f"C must be > 0, got {self.C}")


def entity_split(groups: Sequence, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test row indices with no group on both sides (``GroupShuffleSplit``)."""
    splitter = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
    groups = np.asarray(groups)
    train, test = next(splitter.split(np.zeros(len(groups)), groups=groups))
    return train, test


def make_probe(config: ProbeConfig = ProbeConfig()) -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(C=config.C, max_iter=config.max_iter))


def shuffle_labels(y: np.ndarray, strata: np.ndarray | None, seed: int) -> np.ndarray:
    """A permutation of ``y`` (within each stratum when given)."""
    rng = np.random.default_rng(seed)
    out = np.array(y, copy=True)
    if strata is None:
        return rng.permutation(out)
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        out[idx] = out[rng.permutation(idx)]
    return out


def majority_rate(y: np.ndarray) -> float:
    _, counts = np.unique(y, return_counts=True)
    return float(counts.max() / counts.sum())


def _fit(X: np.ndarray, y: np.ndarray, config: ProbeConfig) -> Pipeline | None:
    if len(np.unique(y)) < 2:
        return None
    probe = make_probe(config)
    threads = config.blas_threads
    if threads == "auto":
        threads = 1 if X.shape[1] < 1024 else None
    with warnings.catch_warnings(), threadpool_limits(limits=threads, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(X, y)
    return probe


def _correct(probe: Pipeline | None, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per row: whether the probe predicts the row's label (without a probe, whether the label
    is the majority label of ``y``: its mean is the majority-class rate)."""
    if probe is None:
        labels, counts = np.unique(y, return_counts=True)
        return y == labels[counts.argmax()]
    return probe.predict(X) == y


def clustered_accuracy(correct: np.ndarray, clusters: np.ndarray, settings: StatisticsSettings) -> Estimate:
    """Accuracy of per-row ``correct`` with a cluster bootstrap interval: ``clusters`` (integer
    codes, one per row) are resampled whole (their correct rows over their rows)."""
    rows = np.bincount(clusters)
    hits = np.bincount(clusters, weights=np.asarray(correct, dtype=float), minlength=len(rows))
    keep = rows > 0
    return ratio_of_sums(hits[keep], rows[keep], settings)


def _select_rows(spec: ProbeSpec, table: pd.DataFrame, config: ProbeConfig) -> np.ndarray:
    labels = table[spec.label].astype(str)
    counts = labels.map(labels.value_counts())
    rows = np.flatnonzero((counts >= config.min_class_count).to_numpy())
    if config.max_rows is not None and len(rows) > config.max_rows:
        groups = table[spec.group].astype(str).to_numpy()[rows]
        rng = np.random.default_rng(config.seed)
        uniq = rng.permutation(np.unique(groups))
        sizes = pd.Series(groups).value_counts()
        keep = set(uniq[: int(np.searchsorted(sizes[uniq].cumsum().to_numpy(), config.max_rows, side="right"))])
        rows = rows[np.isin(groups, list(keep))]
    return rows


def run_probe(
    spec: ProbeSpec,
    caches: Mapping[str, ActivationCache],
    table: pd.DataFrame,
    reference: str = "fp",
    config: ProbeConfig = ProbeConfig(),
    settings: StatisticsSettings = StatisticsSettings(),
) -> pd.DataFrame:
    """One probe at every layer: tidy (variant, layer, probe, metric, value) with the
    accuracies' intervals and the comparisons with the reference (:data:`COLUMNS`, see the
    module docstring)."""
    if reference not in caches:
        raise KeyError(f"reference {reference!r} is not among the variants {sorted(caches)}")
    ref = caches[reference]
    n = ref[spec.site].shape[0]
    if len(table) != n:
        raise ValueError(f"{spec.name}: the {spec.table} table has {len(table)} rows, {spec.site} has {n}")
    for cache in caches.values():
        check_aligned(ref, cache, spec.table)
    table = table.reset_index(drop=True)
    rows = _select_rows(spec, table, config)
    y_all = table[spec.label].astype(str).to_numpy()[rows]
    groups = table[spec.group].astype(str).to_numpy()[rows]
    strata = table[spec.strata].astype(str).to_numpy()[rows] if spec.strata else None
    train, test = entity_split(groups, config.test_size, config.seed)
    y_train, y_test = y_all[train], y_all[test]
    test_clusters = np.unique(groups[test], return_inverse=True)[1]  # the test entities
    y_control = shuffle_labels(y_train, strata[train] if strata is not None else None, config.seed + 1)
    chance = majority_rate(y_test)
    n_layers1 = ref.shape(spec.site)[1]
    layers = config.layers if config.layers is not None else range(n_layers1)

    out = []

    def emit(variant: str, layer: int, metric: str, value: float) -> None:
        out.append((variant, int(layer), spec.name, metric, float(value), *_nan_statistics()))

    def emit_accuracy(variant: str, layer: int, metric: str, correct: np.ndarray, versus: np.ndarray | None = None):
        """An accuracy from per-test-row correctness, and against the reference's (``versus``)."""
        found = clustered_accuracy(correct, test_clusters, settings)
        comparison = paired(versus, correct, settings) if versus is not None else NAN_COMPARISON
        out.append((variant, int(layer), spec.name, metric, float(correct.mean()), *_statistics(found, comparison)))

    for layer in layers:
        # One layer at a time (a sharded cache reads only that layer from disk).
        X = {v: c.layer(spec.site, layer)[rows].float().numpy() for v, c in caches.items()}
        ref_probe = _fit(X[reference][train], y_train, config)
        emit(reference, layer, "chance", chance)
        emit(reference, layer, "n_train", len(train))
        emit(reference, layer, "n_test", len(test))
        emit(reference, layer, "n_classes", len(np.unique(y_all)))
        if config.control:
            control = _fit(X[reference][train], y_control, config)
            emit_accuracy(reference, layer, "control_accuracy", _correct(control, X[reference][test], y_test))
        # The reference's probe on each variant's test rows: row i is one test prompt for all.
        transfer = {variant: _correct(ref_probe, X[variant][test], y_test) for variant in caches}
        for variant in caches:
            versus = transfer[reference] if variant != reference else None
            emit_accuracy(variant, layer, "transfer_accuracy", transfer[variant], versus)
            if variant == reference:
                emit_accuracy(variant, layer, "accuracy", transfer[reference])
            elif config.train_per_variant:
                own = _correct(_fit(X[variant][train], y_train, config), X[variant][test], y_test)
                emit_accuracy(variant, layer, "accuracy", own, transfer[reference])
    results = pd.DataFrame(out, columns=COLUMNS)
    # One family of tests per (probe, layer, metric): every variant against the reference.
    return add_holm(results, by=["probe", "layer", "metric"])


def _statistics(found: Estimate, comparison: Comparison) -> tuple[float, ...]:
    """The interval and comparison columns of one row (``p_holm`` is added per family)."""
    return (
        found.ci_low, found.ci_high, found.stderr,
        comparison.delta, comparison.delta_ci_low, comparison.delta_ci_high, comparison.p_value, np.nan,
    )


def _nan_statistics() -> tuple[float, ...]:
    return _statistics(NAN_ESTIMATE, NAN_COMPARISON)


def run_probes(
    caches: Mapping[str, ActivationCache],
    tables: Mapping[str, pd.DataFrame],
    reference: str = "fp",
    probes: Sequence[ProbeSpec] = DEFAULT_PROBES,
    config: ProbeConfig = ProbeConfig(),
    settings: StatisticsSettings = StatisticsSettings(),
) -> pd.DataFrame:
    """Every probe whose site the reference cache holds and whose table is given; tidy
    (variant, layer, probe, metric, value) with intervals and comparisons (:data:`COLUMNS`).
    ``tables`` maps ``"one_hop"``/``"two_hop"`` to the tables the caches were captured from."""
    tables = {name: with_token_labels(name, table, caches[reference]) for name, table in tables.items()}
    frames = [
        run_probe(spec, caches, tables[spec.table], reference, config, settings)
        for spec in probes
        if spec.table in tables and spec.site in caches[reference] and spec.label in tables[spec.table]
    ]
    if not frames:
        raise ValueError("no probe could run: the caches or the tables lack every probe's site")
    return pd.concat(frames, ignore_index=True)
