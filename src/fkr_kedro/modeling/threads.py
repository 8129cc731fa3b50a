"""How many torch threads a stage should use: the ``auto`` policy of ``runtime.threads``.

Measured on a 2-core machine (docs/performance.md, section 1): the embedded default model
(263k non-embedding parameters) is evaluated fastest on one thread and collapses on two when
another process is busy, while a real model's evaluation
(SmolLM2-135M) runs 1.78x as fast on two free cores and 0.56x as fast on two threads beside
one busy core. So ``auto`` gives a model below ``min_parameters`` one thread, and a larger
one every core that is free when the stage starts (at least one): on a busy machine that is
one. Two exceptions, by node: quantization (the hook's ``auto_one_thread`` nodes) gets one
thread, since GPTQModel runs its own pool of CPU workers and two torch threads on top were
slower in both conditions; training the embedded model (``auto_free_cores``) gets the free
cores, since one and two threads train it to bitwise-identical weights and two train it
~1.5x faster on an idle machine (docs/results_performance.md, "The training-speed decision").
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

# Below this many parameters a model gets one thread (the embedded default has ~0.5M with its
# embeddings, the test configurations less; SmolLM2-135M has 135M).
AUTO_MIN_PARAMETERS = 20_000_000


def free_core_threads(free_cores: float, cores: int) -> int:
    """The free cores, rounded, between 1 and ``cores``: on a 2-core machine two when idle,
    one beside a busy process (where two threads would collapse)."""
    return max(1, min(cores, math.floor(free_cores + 0.5)))


def free_cores(interval: float = 0.25, cores: int | None = None) -> float:
    """Cores idle over the next ``interval`` seconds, from /proc/stat (Linux): cores times the
    share of idle time. Where /proc/stat is missing, every core counts as free."""
    cores = cores or os.cpu_count() or 1
    first = _cpu_times()
    if first is None:
        return float(cores)
    time.sleep(interval)
    second = _cpu_times()
    if second is None:
        return float(cores)
    idle = second[0] - first[0]
    total = second[1] - first[1]
    return cores * idle / total if total > 0 else float(cores)


def _cpu_times() -> tuple[int, int] | None:
    """(idle + iowait, total) jiffies of all cores, or None off Linux."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    values = [int(v) for v in fields[1:]]
    return values[3] + (values[4] if len(values) > 4 else 0), sum(values[:8])


def parameter_count(model_dir: str | Path) -> int | None:
    """Parameters of the Hugging Face model directory ``model_dir`` from its config.json,
    counted on the meta device (no weights read); None when there is no readable config."""
    config_file = Path(model_dir) / "config.json"
    if not config_file.is_file():
        return None
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        json.loads(config_file.read_text())  # a broken file is "unknown", not an error here
        config = AutoConfig.from_pretrained(model_dir, trust_remote_code=False)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
        return sum(p.numel() for p in model.parameters())
    except Exception:  # an architecture transformers cannot build: unknown size, one thread
        return None
