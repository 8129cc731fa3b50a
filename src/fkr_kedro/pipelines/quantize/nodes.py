"""Nodes of the quantize pipeline: one quantized copy of the base model per variant."""

from __future__ import annotations

import random
from pathlib import Path

from fkr_kedro.datasets.variant_model import QuantizationJob
from fkr_kedro.parameters import QuantizeSettings
from fkr_kedro.quantization.variants import VariantSpec


def plan_quantization(source_dir: Path, train_corpus: str, quantize: QuantizeSettings, variant: VariantSpec) -> QuantizationJob:
    """The job that writes ``variant``: calibration texts are the corpus statements, in a
    fixed shuffled order so the first N cover every relation. The dataset runs it unless
    the same job is already on disk."""
    statements = train_corpus.splitlines()
    random.Random(quantize.calibration_seed).shuffle(statements)
    return QuantizationJob(
        spec=variant,
        source_dir=Path(source_dir),
        calibration_texts=tuple(statements[: variant.calibration_size]),
        overwrite=quantize.overwrite,
    )
