"""Calibration texts: the one rule every study uses to pick what GPTQ/AWQ calibrate on."""

from __future__ import annotations

import random
from collections.abc import Sequence


def calibration_texts(statements: Sequence[str], seed: int, size: int | None = None) -> list[str]:
    """The corpus ``statements`` in a fixed order shuffled with ``seed`` (so the first N cover
    every relation rather than the corpus's first entities), cut to the first ``size`` (all
    when None). A calibrated method takes the first ``calibration_size`` of them."""
    texts = list(statements)
    random.Random(seed).shuffle(texts)
    return texts if size is None else texts[:size]
