"""How channels pass through ops without weights: one handler per op type (a registry, `CHANNEL_OPS`).

A handler reads the layouts of a node's inputs from the trace, sets the layouts of its outputs, records
the per-channel constants that must shrink with the channels (BatchNormalization parameters, a bias
added after a MatMul, PRelu slopes), and couples spaces that meet element by element. An op it cannot
follow raises `ChannelRefusal`; the tracer then keeps every channel that reached it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from slimscope.core.prune.channel_trace import (
    ChannelLayout,
    ChannelRefusal,
    ChannelTrace,
    Segment,
    attribute,
    layout_from_labels,
    optional_input,
)

Handler = Callable[[ChannelTrace, int, onnx.NodeProto], None]


def _layout_at(trace: ChannelTrace, node: onnx.NodeProto, slot: int = 0) -> ChannelLayout:
    """The layout of the data input; refuses when channels arrive through another input."""
    for other, name in enumerate(node.input):
        if other != slot and name in trace.layouts:
            raise ChannelRefusal("takes tracked channels through a parameter input")
    layout = trace.layouts.get(node.input[slot]) if slot < len(node.input) else None
    if layout is None:
        raise ChannelRefusal("takes tracked channels through a parameter input")
    return layout


def _elementwise_one(trace: ChannelTrace, index: int, node: onnx.NodeProto) -> None:
    """Each output element depends on one input element: every output holds the input's channels."""
    layout = _layout_at(trace, node)
    for output in node.output:
        trace.set_layout(output, layout)


def _per_channel_params(*slots: int) -> Handler:
    """Normalizations with one parameter per channel (BatchNormalization, InstanceNormalization)."""

    def handler(trace: ChannelTrace, index: int, node: onnx.NodeProto) -> None:
        layout = _layout_at(trace, node)
        if trace.channel_index(node.input[0], layout) != 1:
            raise ChannelRefusal("normalizes along an axis other than the channels")
        for slot in slots:
            name = optional_input(node, slot)
            if name is None:
                continue
            if not trace.is_weight(name):
                raise ChannelRefusal("takes per-channel values that are not stored as weights")
            if trace.weight_dims(name) != (layout.size,):
                raise ChannelRefusal("has per-channel values of an unexpected shape")
            trace.add_cuts(layout, index, slot, 0)
        trace.set_layout(node.output[0], layout)

    return handler


def _spatial(trace: ChannelTrace, index: int, node: onnx.NodeProto) -> None:
    """Pooling: each channel's plane is reduced on its own."""
    layout = _layout_at(trace, node)
    if trace.channel_index(node.input[0], layout) != 1 or layout.block != 1:
        raise ChannelRefusal("pools a tensor whose channels are not on axis 1")
    if len(node.output) > 1 and node.output[1] and trace.users.get(node.output[1]):
        raise ChannelRefusal("returns indices that count the channels")
    trace.set_layout(node.output[0], layout)


def _along_one_axis(default_axis: int, through_last: bool = False) -> Handler:
    """Softmax-like ops mix values along `axis` (LayerNormalization: from `axis` to the last one)."""

    def handler(trace: ChannelTrace, index: int, node: onnx.NodeProto) -> None:
        layout = _layout_at(trace, node)
        rank = len(trace.dims(node.input[0]) or ())
        channel = trace.channel_index(node.input[0], layout)
        axis = attribute(node, "axis", default_axis) % max(rank, 1)
        if channel == axis or (through_last and channel > axis):
            raise ChannelRefusal("mixes values across channels")
        trace.set_layout(node.output[0], layout)

    return handler


def _elementwise(trace: ChannelTrace, index: int, node: onnx.NodeProto) -> None:
    """Add, Mul, ... with broadcasting: activations meeting here are coupled position by position;
    a constant with one value per channel shrinks with them."""
    tracked = [trace.layouts[name] for name in node.input if name in trace.layouts]
    widest = max(layout.size for layout in tracked)
    for single in [layout for layout in tracked if layout.size == 1 < widest]:
        # One channel broadcast over many (a spatial attention map): it cannot lose its only channel,
        # and the others do not depend on it.
        trace.refuse(single.spaces(), f"{node.op_type} '{_label(node)}' broadcasts their only channel.")
    layout = merge_layouts(trace, [layout for layout in tracked if layout.size == widest], node)
    for slot, name in enumerate(node.input):
        if not name or name in trace.layouts:
            continue
        dims = trace.weight_dims(name) if trace.is_weight(name) else trace.dims(name)
        if dims is None:
            raise ChannelRefusal("combines its channels with a tensor of unknown shape")
        position = len(dims) + layout.axis
        if position < 0 or dims[position] == 1:
            continue  # broadcast along the channels: nothing to cut
        if dims[position] != layout.size:
            raise ChannelRefusal("broadcasts its channels against a tensor with another channel count")
        if trace.is_weight(name):
            trace.add_cuts(layout, index, slot, position)
        else:
            trace.refuse(
                layout.spaces(), f"{node.op_type} '{_label(node)}' combines them with channels that stay."
            )
    trace.set_layout(node.output[0], layout)


def merge_layouts(trace: ChannelTrace, layouts: list[ChannelLayout], node: onnx.NodeProto) -> ChannelLayout:
    """One layout for tensors combined element by element; couples the spaces they line up."""
    first = layouts[0]
    if any((o.axis, o.block, o.channels) != (first.axis, first.block, first.channels) for o in layouts[1:]):
        raise ChannelRefusal("combines tensors whose channels do not line up")
    labels = first.labels()
    for other in layouts[1:]:
        merged = []
        for (space_a, channel_a), (space_b, channel_b) in zip(labels, other.labels(), strict=True):
            tracked = [space for space in (space_a, space_b) if space is not None]
            if len(tracked) == 2:
                if channel_a != channel_b:
                    raise ChannelRefusal("adds different channels of coupled layers together")
                trace.couple(*tracked)
            elif tracked:  # one side's channels can never be removed, so the other's cannot either
                trace.refuse(
                    tracked, f"{node.op_type} '{_label(node)}' combines them with channels that stay."
                )
            merged.append((space_a, channel_a) if space_a is not None else (space_b, channel_b))
        labels = merged
    return layout_from_labels(labels, first.axis, first.block)


def _concat(trace: ChannelTrace, index: int, node: onnx.NodeProto) -> None:
    """Along the channel axis, each input's channels become a slice of the output's."""
    rank = len(trace.dims(node.output[0]) or ())
    if not rank:
        raise ChannelRefusal("has an output of unknown rank")
    axis = attribute(node, "axis", 1) % rank - rank  # from the end, like layouts
    tracked = [trace.layouts[name] for name in node.input if name in trace.layouts]
    if any(layout.axis != axis for layout in tracked):
        if all(name in trace.layouts for name in node.input):
            trace.set_layout(node.output[0], merge_layouts(trace, tracked, node))
            return
        raise ChannelRefusal("joins tracked channels with other tensors along another axis")
    if any(layout.block != 1 for layout in tracked):
        raise ChannelRefusal("joins flattened features")
    segments: list[Segment] = []
    for name in node.input:
        layout = trace.layouts.get(name)
        if layout is not None:
            segments.extend(layout.segments)
            continue
        dims = trace.dims(name)
        size = dims[rank + axis] if dims is not None and len(dims) == rank else None
        if not isinstance(size, int):
            raise ChannelRefusal("joins a tensor whose channel count is unknown")
        segments.append(Segment(None, 0, size))
    trace.set_layout(node.output[0], ChannelLayout(axis, tuple(segments)))


def _flatten(trace: ChannelTrace, index: int, node: onnx.NodeProto) -> None:
    """[N, C, H, W] → [N, C*H*W]: each channel becomes H*W consecutive features."""
    layout = _layout_at(trace, node)
    rank = len(trace.dims(node.input[0]) or ())
    if rank and attribute(node, "axis", 1) % rank != 1:
        raise ChannelRefusal("flattens at an axis other than 1")
    _flatten_to_features(trace, node, layout)


def _flatten_to_features(trace: ChannelTrace, node: onnx.NodeProto, layout: ChannelLayout) -> None:
    if trace.channel_index(node.input[0], layout) != 1:
        raise ChannelRefusal("flattens a tensor whose channels are not on axis 1")
    spatial = trace.spatial_size(node.input[0])
    if spatial is None:
        raise ChannelRefusal("flattens a tensor whose spatial size is unknown")
    trace.set_layout(node.output[0], ChannelLayout(-1, layout.segments, layout.block * spatial))


def _reshape(trace: ChannelTrace, index: int, node: onnx.NodeProto) -> None:
    """Only the flattening reshape [N, C, ...] → [N, -1] (or its explicit [N, C*H*W]) is followed."""
    layout = _layout_at(trace, node)
    if attribute(node, "allowzero", 0):
        raise ChannelRefusal("reshapes with allowzero")
    target = trace.constant(node.input[1])
    if target is None:
        if not _is_batch_then_minus_one(trace, node.input[1], node.input[0]):
            raise ChannelRefusal("reshapes to a shape computed at run time")
        _flatten_to_features(trace, node, layout)
        return
    if target.size != 2:
        raise ChannelRefusal("reshapes to a shape other than [N, -1]")
    batch, features = (int(v) for v in target.ravel())
    batch_dim = (trace.dims(node.input[0]) or (None,))[0]
    if features == -1 and batch != 0 and batch != batch_dim:
        raise ChannelRefusal("reshapes to a shape other than [N, -1]")
    if features != -1 and features != layout.size * (trace.spatial_size(node.input[0]) or 0):
        raise ChannelRefusal("reshapes to a shape other than [N, -1]")
    _flatten_to_features(trace, node, layout)
    if features != -1:  # the explicit feature count would be stale after pruning: it becomes [0, -1]
        for space in layout.spaces():
            trace.records[space].reshapes.add(index)


def _is_batch_then_minus_one(trace: ChannelTrace, shape: str, data: str) -> bool:
    """Is `shape` Concat(Unsqueeze(Gather(Shape(data), 0)), [-1]), as torch exports x.view(x.size(0), -1)?"""
    concat = _producer(trace, shape, "Concat")
    if concat is None or len(concat.input) != 2:
        return False
    last = trace.constant(concat.input[1])
    unsqueeze = _producer(trace, concat.input[0], "Unsqueeze")
    gather = unsqueeze and _producer(trace, unsqueeze.input[0], "Gather")
    shape_node = gather and _producer(trace, gather.input[0], "Shape")
    index = gather and trace.constant(gather.input[1])
    return (
        last is not None and last.ravel().tolist() == [-1] and shape_node is not None
        and shape_node.input[0] == data and index is not None and int(index.ravel()[0]) == 0
        and attribute(shape_node, "start", 0) == 0
    )  # fmt: skip


def _producer(trace: ChannelTrace, name: str, op_type: str) -> onnx.NodeProto | None:
    index = trace.producer_of.get(name)
    node = trace.graph.node[index] if index is not None else None
    return node if node is not None and node.op_type == op_type else None


def _pad(trace: ChannelTrace, index: int, node: onnx.NodeProto) -> None:
    layout = _layout_at(trace, node)
    rank = len(trace.dims(node.input[0]) or ())
    channel = trace.channel_index(node.input[0], layout)
    pads_name = optional_input(node, 1)
    pads = trace.constant(pads_name) if pads_name else np.asarray(attribute(node, "pads", []))
    axes_name = optional_input(node, 3)
    axes = trace.constant(axes_name) if axes_name else np.arange(rank)
    if pads is None or axes is None or pads.size != 2 * axes.size:
        raise ChannelRefusal("pads by amounts computed at run time")
    pads, axes = pads.ravel(), axes.ravel() % rank
    for position, axis in enumerate(axes):
        if axis in (0, channel) and (pads[position] or pads[position + len(axes)]):
            raise ChannelRefusal("pads along the channel or batch axis")
    trace.set_layout(node.output[0], layout)


def _resize(trace: ChannelTrace, index: int, node: onnx.NodeProto) -> None:
    layout = _layout_at(trace, node)
    channel = trace.channel_index(node.input[0], layout)
    if optional_input(node, 3) is not None:
        raise ChannelRefusal("resizes to sizes that state the channel count")
    scales_name = optional_input(node, 2 if node.op_type == "Resize" else 1)
    scales = trace.constant(scales_name) if scales_name else None
    axes = attribute(node, "axes")
    if scales is None or axes is not None:
        raise ChannelRefusal("resizes by scales that are not constant per axis")
    if scales.size <= channel or scales.ravel()[channel] != 1:
        raise ChannelRefusal("resizes along the channel axis")
    trace.set_layout(node.output[0], layout)


def _constant_axes(trace: ChannelTrace, node: onnx.NodeProto) -> list[int] | None:
    """Axes given as an attribute (older opsets) or as a constant second input (newer ones)."""
    name = optional_input(node, 1)
    if name is not None:
        value = trace.constant(name)
        if value is None:
            raise ChannelRefusal("takes axes computed at run time")
        return [int(v) for v in value.ravel()]
    axes = attribute(node, "axes")
    return None if axes is None else list(axes)


def _reduce(trace: ChannelTrace, index: int, node: onnx.NodeProto) -> None:
    """ReduceMean over spatial axes (SE blocks): channels stay; keepdims=0 moves the axis."""
    layout = _layout_at(trace, node)
    rank = len(trace.dims(node.input[0]) or ())
    channel = trace.channel_index(node.input[0], layout)
    axes = _constant_axes(trace, node)
    if not axes:
        raise ChannelRefusal("reduces over every axis")
    axes = [axis % rank for axis in axes]
    if channel in axes:
        raise ChannelRefusal("reduces across channels")
    keep = attribute(node, "keepdims", 1)
    _set_moved(trace, node, layout, channel - (0 if keep else sum(a < channel for a in axes)))


def _squeeze(trace: ChannelTrace, index: int, node: onnx.NodeProto) -> None:
    layout = _layout_at(trace, node)
    dims = trace.dims(node.input[0]) or ()
    channel = trace.channel_index(node.input[0], layout)
    axes = _constant_axes(trace, node)
    if axes is None:
        axes = [i for i, d in enumerate(dims) if d == 1]
    axes = [axis % len(dims) for axis in axes]
    if channel in axes:
        raise ChannelRefusal("removes the channel axis")
    _set_moved(trace, node, layout, channel - sum(a < channel for a in axes))


def _unsqueeze(trace: ChannelTrace, index: int, node: onnx.NodeProto) -> None:
    layout = _layout_at(trace, node)
    channel = trace.channel_index(node.input[0], layout)
    axes = _constant_axes(trace, node) or []
    out_rank = len(trace.dims(node.input[0]) or ()) + len(axes)
    for axis in sorted(a % out_rank for a in axes):
        channel += axis <= channel
    _set_moved(trace, node, layout, channel)


def _set_moved(trace: ChannelTrace, node: onnx.NodeProto, layout: ChannelLayout, channel: int) -> None:
    """The output holds the same channels, now on axis `channel` (from the front)."""
    out_dims = trace.dims(node.output[0])
    if out_dims is None:
        raise ChannelRefusal("has an output of unknown rank")
    trace.set_layout(node.output[0], ChannelLayout(channel - len(out_dims), layout.segments, layout.block))


def _shape(trace: ChannelTrace, index: int, node: onnx.NodeProto) -> None:
    """Reading the shape is harmless when only the batch or spatial sizes are used (x.size(0))."""
    layout = _layout_at(trace, node)
    rank = len(trace.dims(node.input[0]) or ())
    channel = trace.channel_index(node.input[0], layout)
    start = attribute(node, "start", 0) % max(rank, 1)
    end = attribute(node, "end", rank)
    end = rank if end >= rank else end % max(rank, 1)
    if not start <= channel < end:
        return
    for user, slot in trace.users.get(node.output[0], []):
        gather = trace.graph.node[user]
        indices = trace.constant(gather.input[1]) if gather.op_type == "Gather" and slot == 0 else None
        if indices is None or attribute(gather, "axis", 0) != 0:
            raise ChannelRefusal("reads the channel count for a computation the tracer does not follow")
        if any((int(i) % (end - start)) + start == channel for i in np.ravel(indices)):
            raise ChannelRefusal("reads the channel count")


def _label(node: onnx.NodeProto) -> str:
    return node.name or node.output[0]


_ELEMENTWISE_ONE = (
    "Relu", "LeakyRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
    "Softplus", "Softsign", "Mish", "Gelu", "Erf", "Clip", "Identity", "Dropout", "Neg", "Abs", "Exp",
    "Log", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round", "Sign", "Cast", "ThresholdedRelu", "Shrink",
)  # fmt: skip
_ELEMENTWISE = ("Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean", "Pow", "PRelu")
_POOLS = ("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
_REDUCES = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL1", "ReduceL2", "ReduceLogSumExp",
            "ReduceProd", "ReduceSumSquare")  # fmt: skip

CHANNEL_OPS: dict[str, Handler] = {
    **dict.fromkeys(_ELEMENTWISE_ONE, _elementwise_one),
    **dict.fromkeys(_ELEMENTWISE, _elementwise),
    **dict.fromkeys(_POOLS, _spatial),
    **dict.fromkeys(_REDUCES, _reduce),
    "BatchNormalization": _per_channel_params(1, 2, 3, 4),
    "InstanceNormalization": _per_channel_params(1, 2),
    "Softmax": _along_one_axis(-1),
    "LogSoftmax": _along_one_axis(-1),
    "Hardmax": _along_one_axis(-1),
    "LpNormalization": _along_one_axis(-1),
    "LayerNormalization": _along_one_axis(-1, through_last=True),
    "Concat": _concat,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Pad": _pad,
    "Resize": _resize,
    "Upsample": _resize,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Shape": _shape,
}
"""Op type → how its outputs carry its inputs' channels. Ops not listed stop the tracer."""
