"""An input that may not exist yet: None instead of an error."""

from __future__ import annotations

from typing import Any

from kedro.io import AbstractDataset, DatasetError


class OptionalDataset(AbstractDataset[None, Any]):
    """Read-only view of ``dataset`` (a catalog entry's configuration) that loads as None
    when it does not exist, for inputs a node can do without (the report's scaling section,
    which exists only after `kedro run --pipeline=scaling`)."""

    def __init__(self, dataset: dict[str, Any], metadata: dict | None = None):
        self._dataset = AbstractDataset.from_config("optional", dict(dataset))
        self.metadata = metadata

    def load(self) -> Any:
        return self._dataset.load() if self._dataset.exists() else None

    def save(self, data: None) -> None:
        raise DatasetError(f"{self._target()} is read-only here; it is written by its own pipeline")

    def _exists(self) -> bool:
        return self._dataset.exists()

    def _describe(self) -> dict[str, Any]:
        return {"dataset": self._target()}

    def _target(self) -> str:
        described = self._dataset._describe()
        return str(described.get("filepath") or described.get("path") or self._dataset)
