"""Hooks that advise: what to run first when an input is missing, and what a partial run
left older than its inputs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from ..kedro_config import catalog_filepath, project_pipelines
from ..run_config import kedro_command

log = logging.getLogger(__name__)


class MissingInputHook:
    """A pipeline input that does not exist yet stops the run, once, with every pipeline that
    has to run first, in order (``one_hop_scores does not exist yet ...: run `kedro run`
    (data_prep -> train -> quantize -> evaluate), or `kedro run
    --pipelines=data_prep,train,quantize,evaluate` first``), checked when the input is about
    to be loaded. A single pipeline is named as before (`kedro run --pipeline=probe`)."""

    def __init__(self):
        self._catalog = None
        self._free_inputs: set[str] = set()

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        self._catalog = catalog
        self._free_inputs = {name for name in pipeline.inputs() if not name.startswith("params:")}

    @hook_impl
    def before_dataset_loaded(self, dataset_name: str, node) -> None:
        if self._catalog is None or dataset_name not in self._free_inputs or self._catalog.exists(dataset_name):
            return
        # Every missing input of the run, so that one message names everything to run first.
        missing = sorted(name for name in self._free_inputs if not self._catalog.exists(name))
        chain = missing_chain(missing, self._catalog.exists)
        if not chain:
            return  # a raw input: the dataset's own error says what is missing
        from kedro.io import DatasetError

        where = catalog_filepath(self._catalog, dataset_name)
        raise DatasetError(
            f"{dataset_name} does not exist yet{f' ({where})' if where else ''}: {run_chain_advice(chain)}"
        )

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], run_result, pipeline, catalog) -> None:
        self._catalog = None

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline, catalog) -> None:
        self._catalog = None


class StaleOutputsHook:
    """After a run that rewrote datasets without recomputing everything computed from them
    (``--only-missing-outputs`` after one variant was removed, ``--namespaces=gptq_w4_g32``,
    ``--pipeline=evaluate``): one warning naming the outputs on disk that are now older than
    their inputs (the cross-variant summary tables, report.html) and the command that
    recomputes them. Kedro itself reruns a node only when its own outputs are missing."""

    def __init__(self):
        self._catalog = None
        self._run_params: dict[str, Any] = {}
        self._ran: set[str] = set()
        self._saved: set[str] = set()
        self._start = 0.0

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        import time

        self._catalog, self._run_params = catalog, dict(run_params or {})
        self._ran, self._saved, self._start = set(), set(), time.time()

    @hook_impl
    def after_node_run(self, node) -> None:
        self._ran.add(node.name)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str) -> None:
        self._saved.add(dataset_name)

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], run_result, pipeline, catalog) -> None:
        try:
            advice = self.stale_advice()
        except Exception as error:  # never fail a finished run over a warning
            log.debug("stale-output check skipped: %s", error)
            advice = None
        if advice:
            log.warning(advice)
        self._catalog = None

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline, catalog) -> None:
        self._catalog = None

    def stale_advice(self) -> str | None:
        """The warning for this run, or None when nothing on disk is older than its inputs."""
        changed = {name for name in self._saved if self._rewritten(name)}
        if self._catalog is None or not changed:
            return None
        pipelines = project_pipelines()
        stale, roots = stale_nodes(pipelines, changed, self._ran)
        on_disk = sorted(
            {o for n in stale for o in n.outputs if catalog_filepath(self._catalog, o) and self._catalog.exists(o)}
        )
        if not on_disk:
            return None
        from ..pipeline_registry import NOT_IN_DEFAULT

        command = []  # kedro_command adds the study's --env and --params
        outside = sorted({name for name, p in pipelines.items() if name in NOT_IN_DEFAULT and set(p.nodes) & set(roots)})
        if outside:
            inside = sorted({name for name, p in pipelines.items() if set(p.nodes) & set(roots)})
            command.append(f"--pipelines={','.join(inside)}")
        command.append(f"--from-nodes={','.join(n.name for n in roots)}")
        shown = ", ".join(on_disk[:8]) + (f" and {len(on_disk) - 8} more" if len(on_disk) > 8 else "")
        return (
            f"{len(on_disk)} output(s) on disk are now older than inputs this run rewrote, and were not "
            f"recomputed: {shown}. Recompute them with `{kedro_command(*command)}` (without --only-missing-outputs)"
        )

    def _rewritten(self, dataset_name: str) -> bool:
        """Whether the run changed the dataset's file or folder (a kept variant is saved
        without being rewritten)."""
        filepath = catalog_filepath(self._catalog, dataset_name) if self._catalog is not None else None
        if filepath is None:
            return False  # in memory: only nodes of this run read it
        path = Path(filepath)
        if not path.exists():
            return False
        times = [path.stat().st_mtime] + ([p.stat().st_mtime for p in path.iterdir()] if path.is_dir() else [])
        return max(times) >= self._start - 1


def stale_nodes(pipelines: dict, changed: set[str], ran: set[str]) -> tuple[list, list]:
    """The nodes of ``pipelines`` that did not run (``ran``: node names) but read, directly
    or through other such nodes, a dataset in ``changed``; and the first of them (those
    that read no output of another). Transcoded names count as one dataset."""
    from kedro.pipeline import Pipeline

    def base(name: str) -> str:
        return name.split("@")[0]

    full = sum(pipelines.values(), Pipeline([]))
    tainted = {base(name) for name in changed}
    first_tainted = set(tainted)
    stale, roots = [], []
    for node in full.nodes:  # topologically sorted
        if node.name in ran or not any(base(i) in tainted for i in node.inputs):
            continue
        stale.append(node)
        if not any(base(i) in tainted - first_tainted for i in node.inputs):
            roots.append(node)
        tainted |= {base(o) for o in node.outputs}
    return stale, roots


def run_chain_advice(chain: list[str]) -> str:
    """What to run for the pipelines of ``chain`` (in order): the default ``kedro run`` when
    it holds them all, and the explicit list."""
    from ..pipeline_registry import NOT_IN_DEFAULT

    if len(chain) == 1:
        return f"the {chain[0]!r} pipeline writes it; run `{kedro_command(f'--pipeline={chain[0]}')}` first"
    explicit = f"`{kedro_command('--pipelines=' + ','.join(chain))}`"  # --pipeline (singular) takes one name
    if any(name in NOT_IN_DEFAULT for name in chain):
        return f"run {explicit} first ({' -> '.join(chain)})"
    return f"run `{kedro_command()}` ({' -> '.join(chain)}), or {explicit} first"


# The order in which the default `kedro run` runs the study's pipelines (each reads what the
# ones before it write); a missing-input message lists the pipelines to run in this order.
RUN_ORDER = ("data_prep", "train", "quantize", "evaluate", "probe", "report")


def missing_chain(missing: list[str], exists) -> list[str]:
    """The pipelines that must run, in order, to write the datasets ``missing``: their
    producers and, before them, the producers of those pipelines' own missing inputs
    (``exists(name)`` says whether a dataset is there). Listed in run order: every pipeline
    after those whose outputs it reads, and otherwise as in :data:`RUN_ORDER` (evaluate
    before probe, as the default pipeline runs them; pipelines outside it by name)."""
    producers = project_pipelines()
    needed: set[str] = set()

    def visit(dataset: str) -> None:
        name = _producer(dataset, producers)
        if name is None or name in needed:
            return
        needed.add(name)
        for wanted in sorted(producers[name].inputs()):
            if not wanted.startswith("params:") and not exists(wanted):
                visit(wanted)

    for dataset in missing:
        visit(dataset)
    return _run_order(needed, producers)


def _run_order(names: set[str], pipelines: dict) -> list[str]:
    """``names`` sorted so that each pipeline comes after those among them whose outputs it
    reads (in any transcoding), ties broken by :data:`RUN_ORDER`, then by name."""

    def bases(datasets) -> set[str]:
        return {d.split("@")[0] for d in datasets}

    after = {
        name: {other for other in names if other != name
               and bases(pipelines[name].inputs()) & bases(pipelines[other].all_outputs())}
        for name in names
    }
    rank = {name: (RUN_ORDER.index(name) if name in RUN_ORDER else len(RUN_ORDER), name) for name in names}
    order: list[str] = []
    while len(order) < len(names):
        ready = [n for n in names if n not in order and after[n] <= set(order)]
        # A cycle between pipelines (none today): fall back to the rank for what is left.
        order.append(min(ready or [n for n in names if n not in order], key=rank.__getitem__))
    return order


def _producer(dataset_name: str, pipelines: dict) -> str | None:
    """The first pipeline that outputs the dataset (in any transcoding: ``base_model@hf``
    writes what ``base_model@dir`` reads)."""
    base = dataset_name.split("@")[0]
    for name, pipeline in pipelines.items():
        if base in {output.split("@")[0] for output in pipeline.all_outputs()}:
            return name
    return None
