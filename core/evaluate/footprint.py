"""What a model costs to store: serialized bytes, gzip-compressed bytes, and non-zero weights.

The gzip size is where unstructured sparsity shows: onnxruntime stores and runs zeros like any other
weight, so zeros shrink only the compressed file. Non-zero counts treat a quantized weight equal to its
zero point as zero, because that is what it dequantizes to.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

# op type → (weight input slot, zero-point input slot, axis of per-channel zero points or None: from
# the node's `axis` attribute, default 1 as DequantizeLinear defines it)
_QUANTIZED_WEIGHT_SLOTS: dict[str, tuple[int, int, int | None]] = {
    "DequantizeLinear": (0, 2, None),
    "QLinearConv": (3, 5, 0),
    "QLinearMatMul": (3, 5, -1),
    "ConvInteger": (1, 3, 0),
    "MatMulInteger": (1, 3, -1),
}
# Inputs that are quantization parameters (scales, zero points), not weights.
_PARAMETER_SLOTS: dict[str, tuple[int, ...]] = {
    "QuantizeLinear": (1, 2),
    "DequantizeLinear": (1, 2),
    "QLinearConv": (1, 2, 4, 5, 6, 7),
    "QLinearMatMul": (1, 2, 4, 5, 6, 7),
    "ConvInteger": (2, 3),
    "MatMulInteger": (2, 3),
}
GZIP_LEVEL = 6


@dataclass(frozen=True)
class Footprint:
    size_bytes: int  # the serialized ModelProto
    gzip_bytes: int | None  # that, gzip level 6; None when not measured (yet)
    nonzero_params: int  # non-zero weight elements (quantized: != zero point)


def measure_footprint(model: onnx.ModelProto, *, compress: bool = True) -> Footprint:
    """Sizes and non-zero weights; `compress` False skips the gzip size (seconds for a 50 MB model)."""
    data = model.SerializeToString()
    compressed = len(gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0)) if compress else None
    return Footprint(len(data), compressed, count_nonzero_params(model))


def gzip_size(model: onnx.ModelProto) -> int:
    return len(gzip.compress(model.SerializeToString(), compresslevel=GZIP_LEVEL, mtime=0))


def count_nonzero_params(model: onnx.ModelProto) -> int:
    """Non-zero elements of float initializers and of integer weights that are dequantized.

    Integer initializers that are not dequantized (shapes, axes, indices) and quantization parameters
    are not weights and are left out.
    """
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    zero_points, parameters = _quantization_roles(model, initializers)
    total = 0
    for name, tensor in initializers.items():
        if name in parameters and name not in zero_points:
            continue
        if tensor.data_type in _FLOAT_TYPES:
            total += int(np.count_nonzero(numpy_helper.to_array(tensor)))
        elif name in zero_points:
            total += _count_not_zero_point(numpy_helper.to_array(tensor), zero_points[name])
    return total


_FLOAT_TYPES = frozenset(
    {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
)


@dataclass(frozen=True)
class _ZeroPoint:
    values: np.ndarray | None  # None: zero
    axis: int
    block_size: int


def _quantization_roles(model: onnx.ModelProto, initializers: dict) -> tuple[dict[str, _ZeroPoint], set[str]]:
    """Integer weights with their zero points, and the names of quantization-parameter inputs."""
    weights: dict[str, _ZeroPoint] = {}
    parameters: set[str] = set()
    for node in model.graph.node:
        parameters.update(
            node.input[i] for i in _PARAMETER_SLOTS.get(node.op_type, ()) if i < len(node.input)
        )
        slots = _QUANTIZED_WEIGHT_SLOTS.get(node.op_type)
        if slots is None or slots[0] >= len(node.input) or node.input[slots[0]] not in initializers:
            continue
        weight_slot, zero_slot, axis = slots
        attrs = {a.name: a.i for a in node.attribute if a.type == onnx.AttributeProto.INT}
        zero_name = node.input[zero_slot] if zero_slot < len(node.input) else ""
        zero = numpy_helper.to_array(initializers[zero_name]) if zero_name in initializers else None
        weights[node.input[weight_slot]] = _ZeroPoint(
            zero, attrs.get("axis", 1) if axis is None else axis, attrs.get("block_size", 0)
        )
    return weights, parameters


def _count_not_zero_point(values: np.ndarray, zero: _ZeroPoint) -> int:
    if zero.values is None or zero.values.size == 1:
        point = 0 if zero.values is None else zero.values.reshape(()).item()
        return int(np.count_nonzero(values != point))
    points = zero.values
    axis = zero.axis % values.ndim
    if zero.block_size:  # blocked: one zero point per block along `axis`, same rank as the weight
        points = np.repeat(points, zero.block_size, axis=axis).take(range(values.shape[axis]), axis=axis)
    elif points.ndim == 1:  # per channel along `axis`
        shape = [1] * values.ndim
        shape[axis] = points.size
        points = points.reshape(shape)
    try:
        return int(np.count_nonzero(values != points))
    except ValueError:  # a zero point that does not broadcast: count plain non-zeros rather than fail
        return int(np.count_nonzero(values))
