"""The study's prompts as an lm-evaluation-harness task folder."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
