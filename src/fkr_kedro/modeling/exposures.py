"""Training length in exposures per fact, the unit of the capacity and scaling studies.

The training loop draws each batch uniformly at random from the corpus, so a run of
``steps`` steps of ``batch_size`` statements shows each statement ``steps * batch_size /
n_statements`` times in expectation (Allen-Zhu & Li's "exposures", Physics of LMs 3.3).
"""

from __future__ import annotations

import math


def steps_for_exposures(n_statements: int, batch_size: int, exposures_per_fact: float) -> int:
    """Training steps that show each statement ``exposures_per_fact`` times in expectation."""
    if n_statements < 1 or batch_size < 1 or exposures_per_fact <= 0:
        raise ValueError(
            f"need n_statements >= 1, batch_size >= 1 and exposures_per_fact > 0; got "
            f"{n_statements}, {batch_size}, {exposures_per_fact}"
        )
    return math.ceil(exposures_per_fact * n_statements / batch_size)


def exposures_per_fact(steps: int, batch_size: int, n_statements: int) -> float:
    """Expected exposures of each statement in ``steps`` steps of ``batch_size``."""
    return steps * batch_size / n_statements
