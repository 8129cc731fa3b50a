"""fkr-kedro: factual knowledge recall of quantized language models."""

__version__ = "0.1.0"
