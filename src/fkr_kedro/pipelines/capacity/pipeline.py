"""The capacity pipeline (`kedro run --pipeline=capacity`, not in the default run): per model
size one namespace (`capacity_<size>`: the sweep over loads, exposures and formats), then the
points of all sizes, their saturation table, conclusion and curves. Empty when no capacity
study is configured (parameters_capacity.yml).

The sizes are independent: `kedro run --pipeline=capacity --namespaces=capacity_<size>` runs
one in its own process (or `kedro submit --pipeline=capacity` as one Slurm task each), and a
final `kedro run --pipeline=capacity` reads every cached point.
"""

from kedro.pipeline import Pipeline, node

from fkr_kedro.capacity.config import namespace
from fkr_kedro.pipelines.wiring import per_namespace
from fkr_kedro.run_config import bind, study_parameters

from .nodes import gather_capacity_points, plot_capacity_curves, summarize_capacity, sweep_capacity


def create_pipeline(**kwargs) -> Pipeline:
    capacity = study_parameters().capacity
    if capacity is None:
        return Pipeline([])
    sizes = sum((size_pipeline(size) for size in capacity.sizes), Pipeline([]))
    summary = Pipeline(
        [
            node(gather_capacity_points, inputs=per_namespace(map(namespace, capacity.sizes), "capacity_points"),
                 outputs="capacity_points", name="gather_capacity_points"),
            node(summarize_capacity, inputs={"capacity_points": "capacity_points"},
                 outputs=["capacity_saturation", "capacity_conclusion"], name="summarize_capacity"),
            node(plot_capacity_curves, inputs={"capacity_points": "capacity_points"}, outputs="capacity_curves",
                 name="plot_capacity_curves"),
        ],
        tags=["capacity"],
    )
    return sizes + summary


def size_pipeline(size: str) -> Pipeline:
    return Pipeline(
        [
            node(
                bind(sweep_capacity, size=size),
                inputs={"capacity": "params:capacity", "models": "capacity_models", "cache": "capacity_point_cache"},
                outputs="capacity_points",
                name="sweep_capacity",
            ),
        ],
        namespace=namespace(size),
        inputs={"capacity_models", "capacity_point_cache"},
        parameters={"params:capacity"},
        tags=["capacity", namespace(size)],
    )
