"""Capacity study: stored knowledge bits against the knowledge load, per format and size."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
