"""Nodes of the quantize pipeline: one quantized copy of the base model per variant."""

from __future__ import annotations

from pathlib import Path

from fkr_kedro.parameters import QuantizeSettings
from fkr_kedro.quantization.api import VariantDirectory, quantize_or_keep
from fkr_kedro.quantization.calibration import calibration_texts
from fkr_kedro.quantization.variants import VariantSpec


def quantize_variant(
    source_dir: Path, train_corpus: str, stored_dir: Path, quantize: QuantizeSettings, variant: VariantSpec
) -> VariantDirectory:
    """Quantize ``variant`` here, in the node, unless the variant stored at ``stored_dir`` is
    current (same fingerprint, files intact: then it is kept without loading its weights).
    Calibration texts: the corpus statements in the fixed shuffled order of
    :func:`~fkr_kedro.quantization.calibration.calibration_texts`."""
    texts = calibration_texts(train_corpus.splitlines(), quantize.calibration_seed, variant.calibration_size)
    return quantize_or_keep(source_dir, variant, texts, stored_dir, overwrite=quantize.overwrite)
