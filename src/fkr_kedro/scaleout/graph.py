"""The job graph of a pipeline from its namespace groups (what Kedro's
``Pipeline.group_nodes_by("namespace")`` returns: groups with ``name``, ``type``, ``nodes``
and ``dependencies``, the names of the groups they read from):

- ``shared``: one job for everything the parallel namespaces read (data preparation, the
  base model) and the namespaces listed ``first`` (the reference variant other variants are
  compared against), with what reads only those;
- ``array``: one array task per parallel namespace (a variant: its quantize, evaluate and
  probe nodes; a model size of the scaling sweep);
- ``report``: the nodes that read the array's outputs (summaries, figures, the report).

A parallel namespace must read only what the shared job writes; otherwise the graph is an
error naming the dataset path, before anything is submitted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from graphlib import CycleError, TopologicalSorter
from typing import Any


class JobGraphError(ValueError):
    """The pipeline's namespaces cannot be split into shared -> array -> report jobs."""


@dataclass(frozen=True)
class JobGraph:
    shared_nodes: list[str]
    first: list[str]  # namespaces run in the shared job
    array: list[str]  # one array task each, in the order given
    report_nodes: list[str]
    report_roots: list[str]  # the report nodes that read nothing another report node writes
    array_nodes: dict[str, list[str]] = field(default_factory=dict)

    def describe(self) -> str:
        """The graph as text (``kedro submit --dry-run``)."""

        def names(items: Sequence[str], limit: int = 12) -> str:
            shown = ", ".join(items[:limit])
            return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")

        lines = [f"shared  1 job          {len(self.shared_nodes)} nodes: {names(self.shared_nodes)}"]
        if self.first:
            lines.append(f"        (namespaces run first, read by the others: {', '.join(self.first)})")
        if self.array:
            lines.append(
                f"array   {len(self.array)} task(s)      after shared succeeds (afterok); one namespace each: "
                f"{', '.join(self.array)}"
            )
        if self.report_nodes:
            lines.append(
                f"report  1 job          after every array task ends, failed or not (afterany); "
                f"{len(self.report_nodes)} nodes from: {names(self.report_roots)}"
            )
        return "\n".join(lines)


def _ancestors(dependencies: Mapping[str, set[str]]) -> dict[str, set[str]]:
    order = list(TopologicalSorter(dependencies).static_order())
    found: dict[str, set[str]] = {}
    for name in order:
        parents = dependencies.get(name, set())
        found[name] = set(parents).union(*(found[p] for p in parents)) if parents else set()
    return found


def plan_jobs(
    groups: Iterable[Any],
    parallel: Sequence[str],
    first: Iterable[str] = (),
    node_parents: Mapping[str, Iterable[str]] | None = None,
) -> JobGraph:
    """Split ``groups`` into the shared job, the array and the report job.

    ``parallel``: the namespaces that get one array task each (the variants, the model
    sizes), in the order of the array's tasks; ``first``: namespaces that run in the shared job instead (other namespaces read
    them); ``node_parents``: ``{node: its parent nodes}``, for the report job's first nodes.
    """
    groups = list(groups)
    by_name = {g.name: g for g in groups}
    dependencies = {g.name: set(g.dependencies) for g in groups}
    try:
        ancestors = _ancestors(dependencies)
    except CycleError as error:
        cycle = " -> ".join(error.args[1])
        raise JobGraphError(
            f"the pipeline's namespace groups form a cycle ({cycle}): a namespace reads a node that "
            "reads the namespace; give the later nodes their own namespace (or none)"
        ) from None
    rank = {name: i for i, name in enumerate(parallel)}  # array tasks in the order given
    parallel, first = set(rank), set(first)
    stage: dict[str, str] = {}
    for name in TopologicalSorter(dependencies).static_order():
        outside = sorted(a for a in ancestors[name] if stage.get(a) != "shared")
        if name in first:
            if outside:
                raise JobGraphError(
                    f"namespace {name!r} must run in the first job (other namespaces read it) but reads "
                    f"{', '.join(outside)}, which run later"
                )
            stage[name] = "shared"
        elif name in parallel and by_name[name].type == "namespace":
            if outside:
                raise JobGraphError(
                    f"namespace {name!r} reads the outputs of {', '.join(outside)}, which do not run in the "
                    f"shared job: an array task may read only what the first job writes (list the namespace "
                    f"it reads as one to run first)"
                )
            stage[name] = "array"
        else:
            stage[name] = "shared" if not outside else "report"
    order = [g.name for g in groups]
    shared_nodes = [n for g in groups if stage[g.name] == "shared" for n in g.nodes]
    report_nodes = [n for g in groups if stage[g.name] == "report" for n in g.nodes]
    report_set = set(report_nodes)
    parents = {k: set(v) for k, v in (node_parents or {}).items()}
    roots = [n for n in report_nodes if not (parents.get(n, set()) & report_set)]
    return JobGraph(
        shared_nodes=shared_nodes,
        first=[n for n in order if n in first and stage.get(n) == "shared"],
        array=sorted((n for n in order if stage[n] == "array"), key=rank.__getitem__),
        report_nodes=report_nodes,
        report_roots=roots,
        array_nodes={g.name: list(g.nodes) for g in groups if stage[g.name] == "array"},
    )
