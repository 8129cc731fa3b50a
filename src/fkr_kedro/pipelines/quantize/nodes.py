"""Nodes of the quantize pipeline: one quantized copy of the base model per variant."""

from __future__ import annotations

from pathlib import Path

from fkr_kedro.parameters import QuantizeSettings
from fkr_kedro.quantization.api import VariantDirectory, quantize_or_keep, spec_calibration_texts
from fkr_kedro.quantization.variants import VariantSpec


def quantize_variant(
    source_dir: Path, train_corpus: str, stored_dir: Path, quantize: QuantizeSettings, variant: VariantSpec
) -> VariantDirectory:
    """Quantize ``variant`` here, in the node, unless the variant stored at ``stored_dir`` is
    current (same fingerprint, files intact: then it is kept without loading its weights).
    Calibration texts: the corpus statements shuffled with the variant's calibration draw's
    seed (:func:`~fkr_kedro.quantization.api.spec_calibration_texts`)."""
    texts = spec_calibration_texts(variant, train_corpus.splitlines())
    return quantize_or_keep(source_dir, variant, texts, stored_dir, overwrite=quantize.overwrite)
