"""One-line descriptions of the model and the knowledge source a run studies, from its
parameters (``base_model``, ``model_shape``, ``knowledge``, ``world``), for MLflow params and
the report."""

from __future__ import annotations

import dataclasses

from collections.abc import Mapping
from typing import Any


def describe_model(base_model: Any = None, model_shape: Any = None) -> str:
    """``description`` when the configuration gives one (e.g. a GGUF whose dequantized
    weights are the fp reference), else what the settings say. Settings may be dicts or the
    typed objects Kedro converts parameters to."""
    base = _as_dict(base_model) or {"kind": "train"}
    if base.get("description"):
        return " ".join(str(base["description"]).split())
    if base.get("kind", "train") == "train":
        shape = _as_dict(model_shape)
        if not shape:
            return "llama trained from scratch (the train pipeline)"
        return f"llama trained from scratch ({shape.get('num_layers')} layers, width {shape.get('hidden_size')})"
    return _settings(base)


def describe_dataset(knowledge: Any = None, world: Any = None) -> str:
    source = _as_dict(knowledge) or {"source": "synthetic"}
    if source.get("source", "synthetic") == "synthetic":
        world = _as_dict(world)
        if not world:
            return "synthetic world (the data_prep pipeline)"
        return f"synthetic world (seed {world.get('seed')}, {world.get('n_people')} people)"
    return _settings(source)


def _settings(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items() if v is not None)


def _as_dict(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    if hasattr(value, "model_dump"):  # pydantic
        return value.model_dump()
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return {"value": value}
