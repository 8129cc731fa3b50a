"""The study's prompts as an lm-evaluation-harness task folder."""
