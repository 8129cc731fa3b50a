"""A read-only view of another pipeline's output that says what to run when it is missing."""

from __future__ import annotations

from typing import Any

from kedro.io import AbstractDataset, DatasetError


class UpstreamDataset(AbstractDataset[None, Any]):
    """Loads ``dataset`` (a catalog entry's configuration). When it does not exist, ``load``
    raises ``DatasetError(missing)``, a message naming the command that writes it; without
    ``missing`` the input is optional and ``load`` returns None.

    Declare it under the upstream dataset's name with a transcoding suffix
    (``probe_results@report``) so that Kedro still orders the consumer after the producer.
    """

    def __init__(self, dataset: dict[str, Any], missing: str | None = None, metadata: dict | None = None):
        self._dataset = AbstractDataset.from_config("upstream", dict(dataset))
        self._missing = missing
        self.metadata = metadata

    def load(self) -> Any:
        if not self._dataset.exists():
            if self._missing is None:
                return None
            raise DatasetError(f"{self._describe_wrapped()} does not exist: {self._missing}")
        return self._dataset.load()

    def save(self, data: None) -> None:
        raise DatasetError(f"{self._describe_wrapped()} is read-only here; it is written by its own pipeline")

    def _exists(self) -> bool:
        return self._dataset.exists()

    def _describe(self) -> dict[str, Any]:
        return {"dataset": self._describe_wrapped(), "optional": self._missing is None}

    def _describe_wrapped(self) -> str:
        described = self._dataset._describe()
        return str(described.get("filepath") or described.get("path") or self._dataset)
