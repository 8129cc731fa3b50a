"""The missing-input message: the pipelines to run first are listed in the order the default
`kedro run` runs them (data_prep, train, quantize, evaluate, probe, report)."""

from __future__ import annotations

import pytest
from kedro.io import DatasetError
from kedro.pipeline import Pipeline, node

from conftest import PROJECT_ROOT
from fkr_kedro.hooks import RUN_ORDER, MissingInputHook, missing_chain, project_pipelines, run_chain_advice
from fkr_kedro.hooks.advice import _run_order


@pytest.fixture(scope="module")
def pipelines():
    from fkr_kedro.run_config import set_active_config_loader

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(PROJECT_ROOT)
        set_active_config_loader(None)  # ./conf, as `kedro run` reads it
        yield project_pipelines()


def _outputs(pipelines: dict, *names: str) -> set[str]:
    return {o.split("@")[0] for name in names for o in pipelines[name].all_outputs()}


def _missing_report_inputs(pipelines: dict, exists) -> list[str]:
    return sorted(n for n in pipelines["report"].inputs() if not n.startswith("params:") and not exists(n))


def test_the_report_before_evaluate_lists_the_pipelines_in_run_order(pipelines, monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)
    prepared = _outputs(pipelines, "data_prep", "train")

    def exists(name: str) -> bool:
        return name.split("@")[0] in prepared

    missing = _missing_report_inputs(pipelines, exists)
    # The report reads probe outputs (sorted first by name) and evaluate outputs: evaluate is
    # still named before probe, as the default pipeline runs them (it said quantize -> probe -> evaluate).
    chain = missing_chain(missing, exists)
    assert chain == ["quantize", "evaluate", "probe"]
    assert run_chain_advice(chain) == (
        "run `kedro run` (quantize -> evaluate -> probe), or `kedro run --pipelines=quantize,evaluate,probe` first"
    )
    # Nothing on disk: the whole study before the report, in run order.
    assert missing_chain(_missing_report_inputs(pipelines, lambda name: False), lambda name: False) == list(RUN_ORDER[:-1])
    # With the variants quantized, evaluate and probe alone.
    prepared |= _outputs(pipelines, "quantize")
    assert missing_chain(_missing_report_inputs(pipelines, exists), exists) == ["evaluate", "probe"]


class _Catalog:
    """The two things the hook asks of a catalog: whether a dataset exists (and, for the
    file it names, a resolver it does not have here)."""

    def __init__(self, present: set[str]):
        self.present = present

    def exists(self, name: str) -> bool:
        return name.split("@")[0] in self.present


def test_the_hook_raises_the_ordered_message_once_for_the_report(pipelines, monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)
    hook = MissingInputHook()
    hook.before_pipeline_run({}, pipelines["report"], _Catalog(_outputs(pipelines, "data_prep", "train")))
    with pytest.raises(DatasetError) as error:
        hook.before_dataset_loaded("recall_by_variant", None)
    assert str(error.value) == (
        "recall_by_variant does not exist yet: run `kedro run` (quantize -> evaluate -> probe), or "
        "`kedro run --pipelines=quantize,evaluate,probe` first"
    )


def _identity(x):
    return x


def test_a_dependency_comes_before_run_order_and_unknown_pipelines_go_last_by_name():
    pipes = {
        # Made-up: here evaluate reads what probe writes, so probe must run first.
        "probe": Pipeline([node(_identity, "variant_model", "probe_out", name="p")]),
        "evaluate": Pipeline([node(_identity, "probe_out", "scores", name="e")]),
        "quantize": Pipeline([node(_identity, "base", "variant_model@variant", name="q")]),
        "zeta": Pipeline([node(_identity, "nothing", "z", name="z")]),
        "alpha": Pipeline([node(_identity, "nothing_either", "a", name="a")]),
    }
    assert _run_order(set(pipes), pipes) == ["quantize", "probe", "evaluate", "alpha", "zeta"]
    assert _run_order({"evaluate", "quantize"}, pipes) == ["quantize", "evaluate"]
