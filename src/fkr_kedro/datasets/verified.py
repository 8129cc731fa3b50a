"""Tables that later stages read, verified on load (:mod:`fkr_kedro.datasets.integrity`).

:class:`VerifiedParquetDataset` and :class:`VerifiedCSVDataset` are kedro-datasets'
``pandas.ParquetDataset`` / ``pandas.CSVDataset`` (same arguments, local files only) that

* validate the table against its schema (``schema``: a name in :data:`SCHEMAS`,
  :mod:`fkr_kedro.knowledge.schema`) before writing it and again after reading it;
* write it atomically with its manifest (sha256, rows, column types) beside it, and check the
  file against that manifest before reading it: a mismatch is one error naming the file and
  the command that rebuilds it (``rebuild``: the arguments of ``kedro run``, e.g.
  ``--pipeline=data_prep`` or ``--pipeline=evaluate --namespaces={variant}``; the study's
  ``--env`` and ``--params`` are added).

In catalog.yml only the ``type:`` changes, plus ``rebuild`` (and ``schema`` where there is one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import DatasetError
from kedro_datasets.pandas import CSVDataset, ParquetDataset

from ..knowledge.schema import (
    SchemaError,
    validate_one_hop,
    validate_one_hop_scores,
    validate_two_hop,
    validate_two_hop_scores,
)
from ..modeling.storage import staged_file
from .integrity import adopt_artifact, check_artifact, rebuild_command, remove_artifact_manifest, write_artifact_manifest

SCHEMAS = {
    "one_hop_prompts": validate_one_hop,
    "two_hop_prompts": validate_two_hop,
    "one_hop_scores": validate_one_hop_scores,
    "two_hop_scores": validate_two_hop_scores,
}


class _VerifiedTable:
    """What both table datasets add to their kedro-datasets base (first in the MRO)."""

    _what = "table"

    def __init__(self, *, filepath: str, rebuild: str, schema: str | None = None, **kwargs: Any):
        if schema is not None and schema not in SCHEMAS:
            raise DatasetError(f"{filepath}: unknown schema {schema!r}; the schemas are {sorted(SCHEMAS)}")
        if kwargs.get("version") is not None or "://" in str(filepath):
            raise DatasetError(f"{filepath}: verified tables are local, unversioned files")
        super().__init__(filepath=filepath, **kwargs)
        self._path = Path(filepath)
        self._rebuild = rebuild
        self._schema = schema

    def _validate(self, data: pd.DataFrame, reading: bool) -> None:
        if self._schema is None:
            return
        try:
            SCHEMAS[self._schema](data, source=f"{self._what} {self._path}")
        except SchemaError as error:
            fix = f"rebuild it with `{rebuild_command(self._rebuild)}`" if reading else "nothing was written"
            raise DatasetError(f"{error}; {fix}") from None

    def load(self) -> pd.DataFrame:
        if not self._path.is_file():
            raise DatasetError(f"no {self._what} at {self._path}: run `{rebuild_command(self._rebuild)}` first")
        manifest = check_artifact(self._path, self._what, self._rebuild, self._content)
        data = super().load()
        self._validate(data, reading=True)
        if manifest is None:
            adopt_artifact(self._path, self._what, self._content(self._path))
        return data

    def save(self, data: pd.DataFrame) -> None:
        if not isinstance(data, pd.DataFrame):
            raise DatasetError(f"{self._path}: expected a DataFrame, got {type(data).__name__}")
        self._validate(data, reading=False)
        remove_artifact_manifest(self._path)
        with staged_file(self._path) as staging:
            self._write(data, staging)
        write_artifact_manifest(self._path, self._content(self._path))

    def _describe(self) -> dict[str, Any]:
        return {**super()._describe(), "rebuild": self._rebuild, "schema": self._schema}


class VerifiedParquetDataset(_VerifiedTable, ParquetDataset):
    def _write(self, data: pd.DataFrame, path: Path) -> None:
        data.to_parquet(path, **self._save_args)

    @staticmethod
    def _content(path: Path) -> dict:
        """Rows and column types from the file's footer (no data read)."""
        import pyarrow.parquet as pq

        metadata = pq.read_metadata(path)
        return {"rows": metadata.num_rows, "columns": {f.name: str(f.type) for f in metadata.schema.to_arrow_schema()}}


class VerifiedCSVDataset(_VerifiedTable, CSVDataset):
    def _write(self, data: pd.DataFrame, path: Path) -> None:
        data.to_csv(path, **self._save_args)

    def _content(self, path: Path) -> dict:
        frame = pd.read_csv(path, **self._load_args)
        return {"rows": len(frame), "columns": {str(c): str(t) for c, t in frame.dtypes.items()}}
