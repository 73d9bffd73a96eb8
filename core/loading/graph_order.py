"""Checks that a graph can be run in some order: every value has one producer and no node waits on itself.

onnxruntime refuses such graphs too, but only when a session is created, which the loader never does; before
these checks a file with a cycle or a value produced twice loaded, and failed later inside the optimizer.
A graph that lists one output twice runs in onnxruntime, yet every tool that keys results by output name
(the comparison, the quantizer's calibration) would silently read one of them: it is refused as damaged.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import onnx

from slimscope.core.errors import ModelLoadError

_NAMES_SHOWN = 4  # a cycle through more nodes names this many, then "and N more"


def check_graph_order(graph: onnx.GraphProto) -> None:
    """Refuse repeated outputs or inputs, values defined twice, and cycles, in the graph and its subgraphs."""
    _check_listed_once(graph)
    _check_defined_once(graph)
    _check_acyclic(graph)
    for node in graph.node:
        for sub in _subgraphs(node):
            check_graph_order(sub)


def _check_listed_once(graph: onnx.GraphProto) -> None:
    for what, values in (("output", graph.output), ("input", graph.input)):
        repeated = [name for name, count in Counter(v.name for v in values).items() if count > 1]
        if repeated:
            raise ModelLoadError(
                f"The model lists its {what} '{repeated[0]}' more than once: the file is damaged."
            )


def _check_defined_once(graph: onnx.GraphProto) -> None:
    """Static single assignment: a value comes from one node, or is an input or a weight (or both: IR < 4)."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    initializers = Counter(t.name for t in graph.initializer)
    for name, count in initializers.items():
        if count > 1:
            raise ModelLoadError(f"The model stores the weight '{name}' more than once: the file is damaged.")
    for node in graph.node:
        for name in node.output:
            if not name:
                continue  # an optional output left unused
            if name in defined:
                raise ModelLoadError(
                    f"Node '{_label(node)}' produces '{name}', which the model already defines elsewhere: "
                    "the file is damaged."
                )
            defined.add(name)


def _check_acyclic(graph: onnx.GraphProto) -> None:
    """Kahn's topological sort over the nodes; what cannot be ordered holds a cycle, which is named."""
    nodes = list(graph.node)
    producer = {name: index for index, node in enumerate(nodes) for name in node.output if name}
    waits_on = [{producer[name] for name in _reads(node) if name in producer} for node in nodes]
    readers: list[list[int]] = [[] for _ in nodes]
    for index, sources in enumerate(waits_on):
        for source in sources:
            readers[source].append(index)
    pending = [len(sources) for sources in waits_on]
    ready = [index for index, count in enumerate(pending) if count == 0]
    ordered = 0
    while ready:
        index = ready.pop()
        ordered += 1
        for reader in readers[index]:
            pending[reader] -= 1
            if pending[reader] == 0:
                ready.append(reader)
    if ordered < len(nodes):
        stuck = {index for index, count in enumerate(pending) if count > 0}
        raise ModelLoadError(_cycle_message([nodes[i] for i in _one_cycle(stuck, waits_on)]))


def _one_cycle(stuck: set[int], waits_on: list[set[int]]) -> list[int]:
    """A cycle among the nodes a topological sort could not order: each of them waits on another one."""
    path: list[int] = []
    seen: dict[int, int] = {}
    current = min(stuck)
    while current not in seen:
        seen[current] = len(path)
        path.append(current)
        current = min(waits_on[current] & stuck)
    return path[seen[current] :]


def _cycle_message(cycle: list[onnx.NodeProto]) -> str:
    if len(cycle) == 1:
        return (
            f"Node '{_label(cycle[0])}' reads its own output, so the model cannot run: the file is damaged."
        )
    names = [f"'{_label(node)}'" for node in cycle[:_NAMES_SHOWN]]
    if len(cycle) > _NAMES_SHOWN:
        names.append(f"{len(cycle) - _NAMES_SHOWN} more")
    listed = ", ".join(names[:-1]) + " and " + names[-1]
    return f"Nodes {listed} feed each other in a cycle, so the model cannot run: the file is damaged."


def _reads(node: onnx.NodeProto) -> Iterable[str]:
    """The values a node needs before it runs: its inputs and what its subgraphs read from outside."""
    yield from (name for name in node.input if name)
    for sub in _subgraphs(node):
        for inner in sub.node:
            yield from _reads(inner)


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    return [attr.g for attr in node.attribute if attr.HasField("g")] + [
        sub for attr in node.attribute for sub in attr.graphs
    ]


def _label(node: onnx.NodeProto) -> str:
    return node.name or node.op_type
