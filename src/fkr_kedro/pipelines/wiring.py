"""Named node inputs for the nodes that read one dataset of every namespace (every variant,
every scaling size).

Such a node takes ``**inputs`` keyed by the datasets' own names (``fp.activations``,
``gptq_w4_g32.activations``), in the order the namespaces are listed (the reference first):
the names cannot collide with the node's other arguments, and no node relies on position.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def per_namespace(namespaces: Iterable[str], dataset: str) -> dict[str, str]:
    """Node inputs ``{"<namespace>.<dataset>": "<namespace>.<dataset>"}`` for every namespace."""
    return {f"{name}.{dataset}": f"{name}.{dataset}" for name in namespaces}


def by_namespace(inputs: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """The ``<namespace>.<dataset>`` entries of a node's inputs, keyed by namespace, in order."""
    suffix = f".{dataset}"
    return {key.removesuffix(suffix): value for key, value in inputs.items() if key.endswith(suffix)}
