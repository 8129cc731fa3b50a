"""The capacity pipeline (`kedro run --pipeline=capacity`, not in the default run): the
sweep over sizes, loads, exposures and formats, then its saturation table, conclusion and
curves. Empty when no capacity study is configured (parameters_capacity.yml)."""

from kedro.pipeline import Pipeline, node

from fkr_kedro.run_config import study_parameters

from .nodes import plot_capacity_curves, summarize_capacity, sweep_capacity


def create_pipeline(**kwargs) -> Pipeline:
    if study_parameters().capacity is None:
        return Pipeline([])
    return Pipeline(
        [
            node(
                sweep_capacity,
                inputs={"capacity": "params:capacity", "models": "capacity_models", "cache": "capacity_point_cache"},
                outputs="capacity_points",
                name="sweep_capacity",
            ),
            node(summarize_capacity, inputs={"capacity_points": "capacity_points"},
                 outputs=["capacity_saturation", "capacity_conclusion"], name="summarize_capacity"),
            node(plot_capacity_curves, inputs={"capacity_points": "capacity_points"}, outputs="capacity_curves",
                 name="plot_capacity_curves"),
        ],
        tags=["capacity"],
    )
