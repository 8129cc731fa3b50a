"""Probe: capture activations once per variant, then probes, drift, EntRec, CnstScore and
neuron attribution against the full-precision reference."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
