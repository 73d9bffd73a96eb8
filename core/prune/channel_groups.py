"""Which output channels of an ONNX model can be removed, and what else must shrink with them.

`find_channel_groups` traces every layer's output channels forward through the graph, node by node,
as Torch-Pruning's DependencyGraph does for PyTorch modules (rebuilt here for ONNX, which it does not
read): through ops that keep channels apart (BatchNormalization, activations, pooling, Concat with
offsets, Flatten with H*W features per channel) to the layers that read them. Layers whose outputs
meet element by element (residual Adds) are coupled: they form one `ChannelGroup` and must drop the
same channel indices. Channels that reach anything the tracer does not follow, or a model output,
stay; the group says why, in one sentence.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from slimscope.core.layers import find_layers
from slimscope.core.prune.channel_layers import trace_layer
from slimscope.core.prune.channel_ops import CHANNEL_OPS
from slimscope.core.prune.channel_trace import (
    ChannelCut,
    ChannelRefusal,
    ChannelTrace,
    SpaceRecord,
    node_label,
)
from slimscope.core.shapes import infer_shapes

__all__ = ["ChannelCut", "ChannelGroup", "find_channel_groups"]


@dataclass(frozen=True)
class ChannelGroup:
    """Coupled layers whose output channels are removed together, by the same indices."""

    id: int
    producers: tuple[str, ...]  # layers whose output channels these are (depthwise convs included)
    consumers: tuple[str, ...]  # layers whose input channels shrink with them
    channels: int
    prunable: bool
    reason: str | None  # why not prunable, one sentence
    # What applying the pruning slices (see `ChannelCut`); weight_cuts pairs each producer with the
    # cut on its own weight, which importance scoring reads.
    cuts: tuple[ChannelCut, ...] = ()
    weight_cuts: tuple[tuple[str, ChannelCut], ...] = ()
    tensors: tuple[str, ...] = ()  # values whose channel count changes (their stale shapes are dropped)
    reshapes: tuple[int, ...] = ()  # Reshape nodes whose explicit [N, C*H*W] target becomes [0, -1]


def find_channel_groups(model: onnx.ModelProto) -> list[ChannelGroup]:
    """Every layer's output channels, grouped with the layers coupled to them, in graph order."""
    shapes = infer_shapes(model, {})
    layers = {layer.node_index: layer for layer in find_layers(model, shapes)}
    trace = ChannelTrace(model, shapes)
    for index, node in enumerate(model.graph.node):
        layer = layers.get(index)
        if layer is not None:
            trace_layer(trace, index, node, layer)
        else:
            _trace_op(trace, index, node)
    for output in model.graph.output:
        if output.name in trace.layouts:
            trace.refuse(trace.layouts[output.name].spaces(), f"They reach the model output '{output.name}'.")
    order = {layer.name: index for index, layer in layers.items()}
    return _groups(trace, order)


def _trace_op(trace: ChannelTrace, index: int, node: onnx.NodeProto) -> None:
    tracked = [name for name in _names_read(node) if name in trace.layouts]
    if not tracked:
        return
    handler = CHANNEL_OPS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
    try:
        if handler is None or any(attr.type in _GRAPH_ATTRIBUTES for attr in node.attribute):
            raise ChannelRefusal("is not an op that channel pruning follows")
        handler(trace, index, node)
    except ChannelRefusal as refusal:
        spaces = {space for name in tracked for space in trace.layouts[name].spaces()}
        trace.refuse(sorted(spaces), f"{node.op_type} '{node_label(node)}' {refusal.why}.")


_GRAPH_ATTRIBUTES = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)


def _names_read(node: onnx.NodeProto) -> list[str]:
    """The node's inputs and every outer value its subgraphs (If, Loop, Scan bodies) read."""
    names = [name for name in node.input if name]
    for attr in node.attribute:
        for graph in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
            for inner in graph.node:
                names.extend(_names_read(inner))
    return names


def _groups(trace: ChannelTrace, order: dict[str, int]) -> list[ChannelGroup]:
    members: dict[int, list[SpaceRecord]] = {}
    for space, record in enumerate(trace.records):
        members.setdefault(trace.root(space), []).append(record)
    return [_group(number, records, order) for number, records in enumerate(members.values())]


def _group(number: int, records: list[SpaceRecord], order: dict[str, int]) -> ChannelGroup:
    """One group from the records of its coupled spaces."""
    channels = records[0].channels
    reason = next((r.reason for r in records if r.reason is not None), None)
    if reason is None and any(r.channels != channels for r in records):
        reason = "Coupled layers have different channel counts."
    producers = sorted({name for r in records for name in r.producers}, key=order.__getitem__)
    consumers = sorted({name for r in records for name in r.consumers}, key=order.__getitem__)
    return ChannelGroup(
        id=number,
        producers=tuple(producers),
        consumers=tuple(consumers),
        channels=channels,
        prunable=reason is None,
        reason=reason,
        cuts=tuple(cut for r in records for cut in r.cuts),
        weight_cuts=tuple(pair for r in records for pair in r.weight_cuts),
        tensors=tuple(sorted({name for r in records for name in r.tensors})),
        reshapes=tuple(sorted({node for r in records for node in r.reshapes})),
    )
