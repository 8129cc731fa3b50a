"""The checkpoints pipeline (`kedro run --pipeline=checkpoints`, not in the default run):
training runs with checkpoints (one per seed), each checkpoint quantized and measured, then
the loss per format against training steps with intervals over the seeds. Empty when
``capacity.checkpoints`` is not configured."""

from kedro.pipeline import Pipeline, node

from fkr_kedro.run_config import study_parameters

from .nodes import measure_checkpoints, summarize_damage


def create_pipeline(**kwargs) -> Pipeline:
    capacity = study_parameters().capacity
    if capacity is None or capacity.checkpoints is None:
        return Pipeline([])
    return Pipeline(
        [
            node(measure_checkpoints, inputs={"capacity": "params:capacity", "runs": "checkpoint_runs"},
                 outputs="checkpoint_points", name="measure_checkpoints"),
            node(summarize_damage, inputs={"checkpoint_points": "checkpoint_points", "capacity": "params:capacity"},
                 outputs=["checkpoint_damage", "checkpoint_direction", "checkpoint_damage_plot"], name="summarize_damage"),
        ],
        tags=["checkpoints"],
    )
