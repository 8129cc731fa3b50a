"""Where a GPTQ or AWQ variant is in GPTQModel's layer-by-layer pass, and how long it will take.

GPTQModel 7.0.0 quantizes one decoder layer after the other and calls the model's
``layer_callback`` (``layer_complete(layer_idx=..., submodule_finalized=False)``) on its main
thread as each layer is done, before that layer's packing finishes in the background
(a second call, ``submodule_finalized=True``, comes from that worker and is ignored here).
:class:`LayerProgress` is that callback: a tqdm bar over the decoder layers, one log line
with the estimated time of the pass once it can be extrapolated, and one with the measured
time at the end.

The clock starts when ``quantize()`` is called, so the first layer's span also holds
GPTQModel's one-time setup: tokenizing the calibration texts and a forward pass up to
layer 0 to capture its inputs (on the tiny test Llama on the CPU, 0.5 s of setup against
0.1 s a layer). The rate is therefore taken from the layers after the first, and the
estimate is logged once the second layer is done (:data:`SETUP_LAYERS`, :func:`estimate`).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from tqdm.auto import tqdm

log = logging.getLogger(__name__)

SETUP_LAYERS = 1  # leading layers whose span includes one-time setup: measured, not extrapolated


def estimate(start: float, done: Sequence[float], layers: int) -> float | None:
    """Estimated seconds from ``start`` to the last of ``layers`` layers being done, given
    ``done[i]``, the time layer ``i`` was done (the same clock as ``start``): the time taken
    so far plus, for each remaining layer, the mean span of the layers measured after the
    first :data:`SETUP_LAYERS`. None while no such layer is measured."""
    measured = len(done) - SETUP_LAYERS
    if measured < 1:
        return None
    per_layer = (done[-1] - done[SETUP_LAYERS - 1]) / measured
    return done[-1] - start + per_layer * max(0, layers - len(done))


def _seconds(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def estimate_line(name: str, start: float, done: Sequence[float], layers: int) -> str | None:
    """The log line with :func:`estimate`, e.g. ``"quantize gptq_w4_g32: ~95 s for 16 layers
    (measured on the first 2)"``; None when there is nothing to extrapolate (too few layers
    done, or none left)."""
    seconds = estimate(start, done, layers)
    if seconds is None or len(done) >= layers:
        return None
    return f"quantize {name}: ~{_seconds(seconds)} s for {layers} layers (measured on the first {len(done)})"


def total_line(name: str, start: float, done: Sequence[float], layers: int, estimated: float | None) -> str:
    """The closing log line: the measured time from ``start`` to the last layer done, next
    to the estimate logged before, e.g. ``"quantize gptq_w4_g32: 16 layers in 97 s
    (estimated ~95 s)"``; ``"3 of 4 layers"`` when GPTQModel reported fewer than all."""
    count = f"{len(done)}" if len(done) == layers else f"{len(done)} of {layers}"
    seconds = (done[-1] if done else start) - start
    line = f"quantize {name}: {count} layers in {_seconds(seconds)} s"
    return line + (f" (estimated ~{_seconds(estimated)} s)" if estimated is not None else "")


class LayerProgress:
    """GPTQModel's ``layer_callback`` for one variant, used as a context manager around
    ``model.quantize(...)``: entering starts the clock and the bar (``desc`` "<method>
    <variant>", hidden unless ``progress``); each decoder layer done advances the bar, and
    the first time :func:`estimate_line` has a line it is logged; leaving without an error
    logs :func:`total_line`. An error of its own is logged as a warning and ends the display,
    never the quantization (GPTQModel re-raises what its callback raises). ``clock`` is
    injectable for tests."""

    def __init__(
        self, name: str, method: str, layers: int, progress: bool = False,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.name, self.method, self.layers, self.progress, self.clock = name, method, layers, progress, clock
        self.start = 0.0
        self.done: list[float] = []
        self.estimated: float | None = None
        self.bar: tqdm | None = None
        self.failed = False

    def __enter__(self) -> LayerProgress:
        self.start, self.done, self.estimated, self.failed = self.clock(), [], None, False
        self.bar = tqdm(total=self.layers, desc=f"{self.method} {self.name}", unit="layer", disable=not self.progress)
        return self

    def layer_complete(self, *, layer_idx: int, submodule_finalized: bool) -> None:
        # Packing done (from a worker thread), lm_head, or a layer already counted: not a new layer.
        if self.failed or submodule_finalized or layer_idx >= self.layers or len(self.done) >= self.layers:
            return
        try:
            self._layer_done()
        except Exception as exc:  # GPTQModel raises a callback's error: a display must not stop the pass
            self.failed = True
            log.warning("quantize %s: progress display stopped (%s: %s)", self.name, type(exc).__name__, exc)

    def _layer_done(self) -> None:
        self.done.append(self.clock())
        if self.bar is not None:
            self.bar.update(1)
        if self.estimated is None and (line := estimate_line(self.name, self.start, self.done, self.layers)):
            self.estimated = estimate(self.start, self.done, self.layers)
            # On a line of its own, not appended to the bar's (a disabled bar has no fp).
            with tqdm.external_write_mode(file=getattr(self.bar, "fp", None)):
                log.info(line)

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.bar is not None:
            self.bar.close()
        if exc_type is None and not self.failed:
            log.info(total_line(self.name, self.start, self.done, self.layers, self.estimated))
