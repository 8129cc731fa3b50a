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


def _score(probe: Pipeline | None, X: np.ndarray, y: np.ndarray) -> float:
    if probe is None:
        return float(majority_rate(y))
    return float((probe.predict(X) == y).mean())


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
) -> pd.DataFrame:
    """One probe at every layer: tidy (variant, layer, probe, metric, value)."""
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
    y_control = shuffle_labels(y_train, strata[train] if strata is not None else None, config.seed + 1)
    chance = majority_rate(y_test)
    n_layers1 = ref.shape(spec.site)[1]
    layers = config.layers if config.layers is not None else range(n_layers1)

    out = []

    def emit(variant: str, layer: int, metric: str, value: float) -> None:
        out.append((variant, int(layer), spec.name, metric, float(value)))

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
            emit(reference, layer, "control_accuracy", _score(control, X[reference][test], y_test))
        for variant in caches:
            emit(variant, layer, "transfer_accuracy", _score(ref_probe, X[variant][test], y_test))
            if variant == reference:
                emit(variant, layer, "accuracy", _score(ref_probe, X[variant][test], y_test))
            elif config.train_per_variant:
                emit(variant, layer, "accuracy", _score(_fit(X[variant][train], y_train, config), X[variant][test], y_test))
    return pd.DataFrame(out, columns=["variant", "layer", "probe", "metric", "value"])


def run_probes(
    caches: Mapping[str, ActivationCache],
    tables: Mapping[str, pd.DataFrame],
    reference: str = "fp",
    probes: Sequence[ProbeSpec] = DEFAULT_PROBES,
    config: ProbeConfig = ProbeConfig(),
) -> pd.DataFrame:
    """Every probe whose site the reference cache holds and whose table is given; tidy
    (variant, layer, probe, metric, value). ``tables`` maps ``"one_hop"``/``"two_hop"`` to the
    tables the caches were captured from."""
    tables = {name: with_token_labels(name, table, caches[reference]) for name, table in tables.items()}
    frames = [
        run_probe(spec, caches, tables[spec.table], reference, config)
        for spec in probes
        if spec.table in tables and spec.site in caches[reference] and spec.label in tables[spec.table]
    ]
    if not frames:
        raise ValueError("no probe could run: the caches or the tables lack every probe's site")
    return pd.concat(frames, ignore_index=True)
