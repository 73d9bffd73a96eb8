"""How layers with weights take part in channel pruning (a registry by op type, `LAYER_HANDLERS`).

A layer opens a space for its output channels (cut along its weight's output axis and its bias), and
when tracked channels feed it, its weight shrinks along the input axis. A depthwise convolution is the
exception: it has one filter per input channel, so its channels *are* its input's; it joins the input's
group (its filters and `group` shrink with it) instead of opening a space.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import onnx

from slimscope.core.layers import Layer
from slimscope.core.prune.channel_trace import (
    ChannelLayout,
    ChannelTrace,
    Segment,
    attribute,
    optional_input,
)

LayerHandler = Callable[[ChannelTrace, int, onnx.NodeProto, Layer], None]


def trace_layer(trace: ChannelTrace, index: int, node: onnx.NodeProto, layer: Layer) -> None:
    if layer.quantized:
        _refuse_layer(trace, node, layer, "has quantized weights; remove channels before quantizing")
        return
    LAYER_HANDLERS[layer.kind](trace, index, node, layer)


def _conv(trace: ChannelTrace, index: int, node: onnx.NodeProto, layer: Layer) -> None:
    rank = len(layer.weight_shape)  # the output's rank too
    if layer.groups > 1 and layer.groups == layer.out_channels and layer.weight_shape[1] == 1:
        _depthwise(trace, index, node, layer)
        return
    why = None if layer.groups == 1 else f"is a grouped convolution ({layer.groups} groups)"
    _open_space(trace, index, node, layer, weight_axis=0, output_axis=1 - rank, why=why)
    _consume(trace, index, node, layer, weight_axis=1, input_axis=1 - rank, why=why)


def _conv_transpose(trace: ChannelTrace, index: int, node: onnx.NodeProto, layer: Layer) -> None:
    rank = len(layer.weight_shape)
    why = None if layer.groups == 1 else f"is a grouped transposed convolution ({layer.groups} groups)"
    _open_space(trace, index, node, layer, weight_axis=1, output_axis=1 - rank, why=why)
    _consume(trace, index, node, layer, weight_axis=0, input_axis=1 - rank, why=why)


def _gemm(trace: ChannelTrace, index: int, node: onnx.NodeProto, layer: Layer) -> None:
    if node.input[1] != layer.weight or attribute(node, "transA", 0):
        _refuse_layer(trace, node, layer, "multiplies by a constant first operand or a transposed input")
        return
    transposed = bool(attribute(node, "transB", 0))  # B is [out, in] when transposed, else [in, out]
    _open_space(trace, index, node, layer, weight_axis=0 if transposed else 1, output_axis=-1)
    _consume(trace, index, node, layer, weight_axis=1 if transposed else 0, input_axis=-1)


def _matmul(trace: ChannelTrace, index: int, node: onnx.NodeProto, layer: Layer) -> None:
    if node.input[1] != layer.weight or len(layer.weight_shape) != 2:
        _refuse_layer(
            trace, node, layer, "multiplies by a constant that is not a [in, out] matrix on the right"
        )
        return
    _open_space(trace, index, node, layer, weight_axis=1, output_axis=-1)
    _consume(trace, index, node, layer, weight_axis=0, input_axis=-1)


def _depthwise(trace: ChannelTrace, index: int, node: onnx.NodeProto, layer: Layer) -> None:
    """One filter per channel: the output holds the input's channels, and the filters shrink with them."""
    rank = len(layer.weight_shape)
    layout = trace.layouts.get(node.input[0])
    bias = optional_input(node, 2)
    bias_ok = bias is None or (trace.is_weight(bias) and trace.weight_dims(bias) == (layer.out_channels,))
    if layout is None or layout.axis != 1 - rank or layout.block != 1 or not bias_ok:
        why = (
            "filters channels that cannot be removed"
            if layout is None
            else "filters channels it cannot follow"
        )
        _open_space(trace, index, node, layer, weight_axis=0, output_axis=1 - rank, why=why)
        if layout is not None:
            trace.refuse(layout.spaces(), f"Conv '{layer.name}' {why}.")
        return
    trace.add_cuts(layout, index, 1, 0, producer=layer.name)
    if bias is not None:
        trace.add_cuts(layout, index, 2, 0)
    trace.set_layout(node.output[0], layout)


def _open_space(
    trace, index, node, layer: Layer, *, weight_axis: int, output_axis: int, why: str | None = None
):
    """The layer's output channels become a new space: its weight rows and its bias shrink with them."""
    channels = layer.out_channels
    space = trace.new_space(channels, layer.name)
    layout = ChannelLayout(output_axis, (Segment(space, 0, channels),))
    trace.add_cuts(layout, index, 1, weight_axis, producer=layer.name)
    bias = optional_input(node, 2)
    if bias is not None and not trace.is_weight(bias):
        why = why or "adds a bias computed at run time"
    elif bias is not None:
        dims = trace.weight_dims(bias)
        if dims and dims[-1] == channels:
            trace.add_cuts(layout, index, 2, len(dims) - 1)
        elif math.prod(dims) != 1:
            why = why or "adds a bias of an unexpected shape"
    if why is not None:
        trace.refuse([space], f"{node.op_type} '{layer.name}' {why}.")
    trace.set_layout(node.output[0], layout)


def _consume(trace, index, node, layer: Layer, *, weight_axis: int, input_axis: int, why: str | None = None):
    """Tracked channels reaching the layer's input remove the matching input slices of its weight."""
    _refuse_tracked_parameters(trace, node, layer)
    layout = trace.layouts.get(node.input[0])
    if layout is None:
        return
    flattened_into_conv = layout.block != 1 and layer.kind not in ("Gemm", "MatMul")
    if why is None and (layout.axis != input_axis or flattened_into_conv):
        why = "reads them along another axis"
    if why is not None:
        trace.refuse(layout.spaces(), f"{node.op_type} '{layer.name}' {why}.")
        return
    trace.add_cuts(layout, index, 1, weight_axis)
    trace.add_consumer(layout, layer.name)


def _refuse_tracked_parameters(trace: ChannelTrace, node: onnx.NodeProto, layer: Layer) -> None:
    for name in node.input[1:]:
        if name in trace.layouts:
            trace.refuse(trace.layouts[name].spaces(), f"{node.op_type} '{layer.name}' uses them as weights.")


def _refuse_layer(trace: ChannelTrace, node: onnx.NodeProto, layer: Layer, why: str) -> None:
    """A layer the tracer cannot prune: its own channels stay, and so do those that feed it."""
    reason = f"{node.op_type} '{layer.name}' {why}."
    trace.refuse([trace.new_space(layer.out_channels, layer.name)], reason)
    for name in node.input:
        if name in trace.layouts:
            trace.refuse(trace.layouts[name].spaces(), reason)


LAYER_HANDLERS: dict[str, LayerHandler] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Gemm": _gemm,
    "MatMul": _matmul,
}
"""Layer kind (see `Layer.kind`) → how it opens and consumes channels."""
