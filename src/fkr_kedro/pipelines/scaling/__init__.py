"""Scaling study: task-stratified laws for memorization vs utilization under GPTQ."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
