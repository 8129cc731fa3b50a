"""The base of every typed settings block (``parameters.py``, the scaling and capacity
studies): frozen, and a key it does not know is an error naming the key, not ignored."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
