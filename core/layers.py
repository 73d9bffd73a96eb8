"""The layer view: every node with weights (Conv, ConvTranspose, Gemm, MatMul with a constant operand).

A layer's weight is read as a matrix of output channels × input blocks × block elements, whatever
the op's own layout, so that statistics, sparsity maps and (later) pruning treat all ops alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})


@dataclass(frozen=True)
class Layer:
    name: str  # unique; the key recipes use
    op_type: str
    node_index: int
    weight: str  # initializer holding the weight (the quantized one when `quantized`)
    bias: str | None
    weight_shape: tuple[int, ...]
    groups: int
    out_channels: int
    out_axis: int  # axis of the weight that indexes output channels (ConvTranspose: 1, per group)
    params: int  # weight + bias elements
    macs: int | None  # multiply-accumulates for one inference at the model's input shape
    output_shape: tuple | None
    quantized: bool  # the weight is stored in integers and dequantized by a DequantizeLinear

    @property
    def depthwise(self) -> bool:
        return self.op_type == "Conv" and self.groups > 1 and self.groups == self.out_channels


def find_layers(model: onnx.ModelProto, shapes: dict[str, tuple]) -> list[Layer]:
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    layers, used_names = [], set()
    for index, node in enumerate(graph.node):
        if node.op_type not in WEIGHTED_OPS or node.domain not in ("", "ai.onnx"):
            continue
        found = _weight_input(node, inits, producers)
        if found is None:
            continue
        slot, weight, quantized = found
        shape = tuple(inits[weight].dims)
        if len(shape) < 2 and node.op_type != "MatMul":
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        groups = int(attrs.get("group", 1))
        out_axis, out_channels, per_output = _channels(node.op_type, slot, shape, groups, attrs)
        bias = _bias(node, inits, consumers, producers)
        output_shape = shapes.get(node.output[0])
        macs = None
        if output_shape and all(isinstance(d, int) and d > 0 for d in output_shape):
            macs = math.prod(output_shape) * per_output
        name = _unique(node.name or node.output[0] or f"{node.op_type}_{index}", used_names)
        bias_size = math.prod(inits[bias].dims) if bias else 0
        layers.append(
            Layer(name, node.op_type, index, weight, bias, shape, groups, out_channels, out_axis,
                  math.prod(shape) + bias_size, macs, output_shape, quantized)
        )  # fmt: skip
    return layers


def _weight_input(node, inits, producers) -> tuple[int, str, bool] | None:
    """(input slot, initializer name, quantized) of the node's constant operand, if it has one."""
    slots = [1, 0] if node.op_type in ("MatMul", "Gemm") else [1]
    for slot in slots:
        if slot >= len(node.input):
            continue
        name = node.input[slot]
        if name in inits:
            return slot, name, False
        producer = producers.get(name)
        if producer is not None and producer.op_type == "DequantizeLinear" and producer.input[0] in inits:
            return slot, producer.input[0], True
    return None


def _channels(op: str, slot: int, shape: tuple, groups: int, attrs: dict) -> tuple[int, int, int]:
    """(output-channel axis of the weight, output channels, multiply-accumulates per output element)."""
    size = math.prod(shape)
    if op == "Conv":
        return 0, shape[0], size // max(shape[0], 1)
    if op == "ConvTranspose":
        out = shape[1] * groups
        return 1, out, size // max(out, 1)  # per output element: (Cin/g)·kernel
    if op == "Gemm":
        trans = attrs.get("transA" if slot == 0 else "transB", 0)
        axis = (1 if trans else 0) if slot == 0 else (0 if trans else 1)
        return axis, shape[axis], shape[1 - axis]
    if len(shape) == 1:  # MatMul with a vector: one output
        return 0, 1, shape[0]
    if slot == 0:  # MatMul with a constant left operand: rows are outputs, columns the inputs
        return len(shape) - 2, shape[-2], shape[-1]
    return len(shape) - 1, shape[-1], shape[-2]


def _bias(node, inits, consumers, producers) -> str | None:
    if node.op_type in ("Conv", "ConvTranspose", "Gemm"):
        return node.input[2] if len(node.input) > 2 and node.input[2] in inits else None
    users = consumers.get(node.output[0], [])
    if len(users) == 1 and users[0].op_type == "Add":  # MatMul + Add is how Linear often exports
        other = [n for n in users[0].input if n != node.output[0]]
        if other and other[0] in inits and len(inits[other[0]].dims) == 1:
            return other[0]
    return None


def _unique(name: str, used: set[str]) -> str:
    candidate, n = name, 2
    while candidate in used:
        candidate, n = f"{name}#{n}", n + 1
    used.add(candidate)
    return candidate


def tensor_array(tensor: onnx.TensorProto) -> np.ndarray:
    """A weight as numpy, without copying when the bytes allow it (read-only then)."""
    if tensor.raw_data and tensor.data_type in _RAW_DTYPES:
        return np.frombuffer(tensor.raw_data, dtype=_RAW_DTYPES[tensor.data_type]).reshape(tuple(tensor.dims))
    return numpy_helper.to_array(tensor)


_RAW_DTYPES = {
    onnx.TensorProto.FLOAT: np.dtype("<f4"),
    onnx.TensorProto.FLOAT16: np.dtype("<f2"),
    onnx.TensorProto.DOUBLE: np.dtype("<f8"),
    onnx.TensorProto.INT8: np.dtype("i1"),
    onnx.TensorProto.UINT8: np.dtype("u1"),
    onnx.TensorProto.INT32: np.dtype("<i4"),
}


def layer_weights(model: onnx.ModelProto, layer: Layer, inits: dict[str, onnx.TensorProto]) -> np.ndarray:
    """The layer's weight as float values (dequantized when stored quantized), in its ONNX layout."""
    values = tensor_array(inits[layer.weight])
    if layer.quantized:
        values = _dequantize(model, layer, values, inits)
    if values.dtype != np.float32 and values.dtype != np.float64:
        values = values.astype(np.float32)
    return values


def _dequantize(model, layer: Layer, values: np.ndarray, inits) -> np.ndarray:
    node = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == layer.weight)
    scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
    zero = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] else 0
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
    if scale.ndim == 1 and scale.size > 1:
        shape = [1] * values.ndim
        shape[axis] = scale.size
        scale = scale.reshape(shape)
        zero = np.asarray(zero).reshape(shape) if np.ndim(zero) else zero
    return (values.astype(np.float32) - np.asarray(zero, dtype=np.float32)) * scale


def weight_blocks(values: np.ndarray, layer: Layer) -> np.ndarray:
    """The weight as [output channel, input block, elements per block] (a view where possible).

    An input block is one input channel's kernel for convolutions and one input feature for Gemm and
    MatMul, so a sparsity map row shows which inputs an output channel no longer reads.
    """
    shape = values.shape
    if layer.op_type == "Conv":
        return values.reshape(shape[0], shape[1], -1)
    if layer.op_type == "ConvTranspose":
        g = layer.groups
        grouped = values.reshape(g, shape[0] // g, shape[1], -1).transpose(0, 2, 1, 3)
        return grouped.reshape(shape[1] * g, shape[0] // g, -1)
    if values.ndim == 1:
        return values.reshape(1, -1, 1)
    if layer.out_axis == values.ndim - 1:  # outputs along the last axis: Gemm/MatMul B
        matrix = values.reshape(-1, shape[-1]).T
    elif layer.out_axis == values.ndim - 2 and values.ndim > 2:  # batched constant left operand
        matrix = np.moveaxis(values, -2, 0).reshape(shape[-2], -1)
    else:
        matrix = values
    return matrix.reshape(matrix.shape[0], matrix.shape[1], 1)
