"""``kedro run --pipelines=export``: the one-hop and two-hop prompt tables as an
lm-evaluation-harness task folder (``lm_eval_tasks``). Not part of ``__default__``."""

from kedro.pipeline import Pipeline, node

from .nodes import export_lm_eval


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            node(
                export_lm_eval,
                inputs={
                    "one_hop_prompts": "one_hop_prompts",
                    "two_hop_prompts": "two_hop_prompts",
                    "export": "params:export",
                    "knowledge": "params:knowledge",
                    "evaluate": "params:evaluate",
                },
                outputs="lm_eval_tasks",
                name="export_lm_eval",
            )
        ]
    )
