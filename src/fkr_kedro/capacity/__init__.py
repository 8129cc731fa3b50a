"""The capacity study: stored knowledge bits against the knowledge load, per quantization
format and model size, at a fixed number of exposures per fact (docs/capacity.md)."""
