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

# op type → how it computes (its weight layout and MACs are those of this float op).
_OP_KIND = {
    "Conv": "Conv", "QLinearConv": "Conv", "ConvInteger": "Conv", "ConvTranspose": "ConvTranspose",
    "Gemm": "Gemm", "MatMul": "MatMul", "QLinearMatMul": "MatMul", "MatMulInteger": "MatMul",
}  # fmt: skip
WEIGHTED_OPS = frozenset(_OP_KIND)

# Where a constant operand may sit, per op: (weight slot, its scale slot, its zero-point slot).
# Float ops have no scale; quantized operator-format ops carry them as inputs.
_WEIGHT_SLOTS: dict[str, list[tuple[int, int | None, int | None]]] = {
    "Conv": [(1, None, None)], "ConvTranspose": [(1, None, None)],
    "Gemm": [(1, None, None), (0, None, None)], "MatMul": [(1, None, None), (0, None, None)],
    "QLinearConv": [(3, 4, 5)], "QLinearMatMul": [(3, 4, 5), (0, 1, 2)],
    "ConvInteger": [(1, None, 3)], "MatMulInteger": [(1, None, 3), (0, None, 2)],
}  # fmt: skip


@dataclass(frozen=True)
class WeightQuantization:
    """How an integer weight maps to real values: (q - zero_point) * scale, per tensor or along `axis`."""

    scale: str | None  # initializer names; no scale means raw integers (ConvInteger, MatMulInteger)
    zero_point: str | None
    axis: int | None  # from a DequantizeLinear; None means: the axis whose length matches the scale
    block_size: int = 0  # opset-21 blocked quantization: one scale per `block_size` elements on `axis`


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
    quantization: WeightQuantization | None  # set when the weight is stored as integers

    @property
    def kind(self) -> str:
        """The float op this layer computes like: Conv, ConvTranspose, Gemm or MatMul."""
        return _OP_KIND[self.op_type]

    @property
    def quantized(self) -> bool:
        return self.quantization is not None

    @property
    def depthwise(self) -> bool:
        return self.kind == "Conv" and self.groups > 1 and self.groups == self.out_channels


def find_layers(model: onnx.ModelProto, shapes: dict[str, tuple]) -> list[Layer]:
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    layers: list[Layer] = []
    used_names: set[str] = set()
    for index, node in enumerate(graph.node):
        if node.op_type not in WEIGHTED_OPS or node.domain not in ("", "ai.onnx"):
            continue
        found = _weight_input(node, inits, producers)
        if found is None:
            continue
        slot, weight, quantization = found
        kind = _OP_KIND[node.op_type]
        shape = tuple(inits[weight].dims)
        if len(shape) < 2 and kind != "MatMul":
            continue
        attrs = {a.name: a.i for a in node.attribute if a.type == onnx.AttributeProto.INT}
        groups = max(int(attrs.get("group", 1)), 1)
        out_axis, out_channels, per_output = _channels(kind, slot, shape, groups, attrs)
        bias = _bias(node, inits, consumers, producers, slot, out_channels)
        output_shape = shapes.get(node.output[0])
        # A transposed conv spreads each input element over Cout/g·kernel outputs: count from the input.
        counted = shapes.get(node.input[0]) if kind == "ConvTranspose" else output_shape
        macs = None
        if counted and all(isinstance(d, int) and d > 0 for d in counted):
            macs = math.prod(counted) * per_output
        name = _unique(node.name or node.output[0] or f"{node.op_type}_{index}", used_names)
        bias_size = math.prod(inits[bias].dims) if bias else 0
        layers.append(
            Layer(name, node.op_type, index, weight, bias, shape, groups, out_channels, out_axis,
                  math.prod(shape) + bias_size, macs, output_shape, quantization)
        )  # fmt: skip
    return layers


def _weight_input(node, inits, producers) -> tuple[int, str, WeightQuantization | None] | None:
    """(input slot, initializer name, quantization) of the node's constant operand, if it has one."""

    def name_at(slot: int | None) -> str | None:
        return node.input[slot] if slot is not None and slot < len(node.input) and node.input[slot] else None

    for slot, scale_slot, zero_slot in _WEIGHT_SLOTS[node.op_type]:
        name = name_at(slot)
        if name is None:
            continue
        if name in inits:
            if scale_slot is None and zero_slot is None:
                return slot, name, None
            return slot, name, WeightQuantization(name_at(scale_slot), name_at(zero_slot), None)
        producer = producers.get(name)
        if producer is not None and producer.op_type == "DequantizeLinear" and producer.input[0] in inits:
            attrs = {a.name: a.i for a in producer.attribute}
            zero = producer.input[2] if len(producer.input) > 2 and producer.input[2] else None
            quant = WeightQuantization(
                producer.input[1], zero, attrs.get("axis", 1), attrs.get("block_size", 0)
            )
            return slot, producer.input[0], quant
    return None


def _channels(op: str, slot: int, shape: tuple, groups: int, attrs: dict) -> tuple[int, int, int]:
    """(output-channel axis of the weight, output channels, multiply-accumulates per output element)."""
    size = math.prod(shape)
    if op == "Conv":
        return 0, shape[0], size // max(shape[0], 1)
    if op == "ConvTranspose":
        return 1, shape[1] * groups, size // max(shape[0], 1)  # per input element: (Cout/g)·kernel
    if op == "Gemm":
        trans = attrs.get("transA" if slot == 0 else "transB", 0)
        axis = (1 if trans else 0) if slot == 0 else (0 if trans else 1)
        return axis, shape[axis], shape[1 - axis]
    if len(shape) == 1:  # MatMul with a vector: one output
        return 0, 1, shape[0]
    if slot == 0:  # MatMul with a constant left operand: rows are outputs, columns the inputs
        return len(shape) - 2, shape[-2], shape[-1]
    return len(shape) - 1, shape[-1], shape[-2]


def _bias(node, inits, consumers, producers, weight_slot: int, out_channels: int) -> str | None:
    bias_slot = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2, "QLinearConv": 8}.get(node.op_type)
    if bias_slot is not None:
        name = node.input[bias_slot] if len(node.input) > bias_slot else ""
        producer = producers.get(name)
        if producer is not None and producer.op_type == "DequantizeLinear":  # a QDQ model's int32 bias
            name = producer.input[0]
        return name if name in inits else None
    if node.op_type != "MatMul" or weight_slot != 1:  # with a constant A, a 1-D addend runs along columns
        return None
    users = consumers.get(node.output[0], [])
    if len(users) == 1 and users[0].op_type == "Add":  # MatMul + Add is how Linear often exports
        other = [n for n in users[0].input if n != node.output[0]]
        if other and other[0] in inits and list(inits[other[0]].dims) == [out_channels]:
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


_RAW_DTYPES: dict[int, np.dtype] = {
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
    if layer.quantization is not None:
        values = _dequantize(values, layer, inits)
    if values.dtype != np.float32 and values.dtype != np.float64:
        values = values.astype(np.float32)
    return values


def _dequantize(values: np.ndarray, layer: Layer, inits) -> np.ndarray:
    quant = layer.quantization
    assert quant is not None
    scale = numpy_helper.to_array(inits[quant.scale]).astype(np.float32) if quant.scale in inits else None
    zero = numpy_helper.to_array(inits[quant.zero_point]) if quant.zero_point in inits else np.zeros(())
    real = values.astype(np.float32) - _along_axis(zero.astype(np.float32), values, layer, quant)
    if scale is not None:
        real *= _along_axis(scale, values, layer, quant)
    return real


def _along_axis(param: np.ndarray, values: np.ndarray, layer: Layer, quant: WeightQuantization) -> np.ndarray:
    """A per-tensor, per-axis or blocked quantization parameter, shaped to broadcast against the weight."""
    if param.size <= 1:
        return param.reshape(())
    axis = quant.axis
    if quant.block_size and axis is not None and param.ndim == values.ndim:
        axis %= values.ndim
        return np.repeat(param, quant.block_size, axis=axis).take(range(values.shape[axis]), axis=axis)
    if axis is None:  # operator-format ops: per output channel
        axis = (
            layer.out_axis if values.shape[layer.out_axis] == param.size else values.shape.index(param.size)
        )
    axis %= values.ndim
    shape = [1] * values.ndim
    shape[axis] = param.size
    return param.reshape(shape)


def weight_blocks(values: np.ndarray, layer: Layer) -> np.ndarray:
    """The weight as [output channel, input block, elements per block] (a view where possible).

    An input block is one input channel's kernel for convolutions and one input feature for Gemm and
    MatMul, so a sparsity map row shows which inputs an output channel no longer reads.
    """
    shape = values.shape
    if layer.kind == "Conv":
        return values.reshape(shape[0], shape[1], -1)
    if layer.kind == "ConvTranspose":
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
