"""One namespaced instance of the same quantization pipeline per variant in parameters."""

from kedro.pipeline import Pipeline, node

from fkr_kedro.quantization.variants import VariantSpec
from fkr_kedro.run_config import active_variants, bind

from .nodes import quantize_variant


def create_pipeline(**kwargs) -> Pipeline:
    return sum((variant_pipeline(spec) for spec in active_variants()), Pipeline([]))


def variant_pipeline(spec: VariantSpec) -> Pipeline:
    return Pipeline(
        [
            node(
                bind(quantize_variant, variant=spec),
                inputs={
                    "source_dir": "base_model@dir", "train_corpus": "train_corpus", "stored_dir": "variant_store",
                    "quantize": "params:quantize",
                },
                outputs="model@variant",
                name="quantize",
            )
        ],
        namespace=spec.name,
        inputs={"base_model@dir", "train_corpus"},
        parameters={"params:quantize"},
        tags=["quantize", spec.method],
    )
