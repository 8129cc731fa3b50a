"""Quantization damage along training: checkpoints quantized and measured."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
