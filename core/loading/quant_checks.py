"""Quantization parameters that fit what they quantize, checked when a model is loaded.

A quantized model stores integer weights with a scale and a zero point, one per tensor or one per channel.
A damaged file can hold an empty zero point, or more scales than the weight has channels; onnxruntime only
finds out when it runs, and the layer view and the optimizer would fail on the arithmetic with an error no
user can read (tests/fuzz_loader.py found both). These checks run on the loaded model, after constants
were folded into weights, and only on parameters stored as weights: computed ones are the runtime's to judge.
"""

from __future__ import annotations

import math

import onnx

from slimscope.core.errors import ModelLoadError

# Per op: (data slot or None, scale slot or None, zero-point slot) for each quantized operand.
_OPERANDS: dict[str, list[tuple[int | None, int | None, int]]] = {
    "QuantizeLinear": [(0, 1, 2)],
    "DequantizeLinear": [(0, 1, 2)],
    "QLinearConv": [(0, 1, 2), (3, 4, 5), (None, 6, 7)],
    "QLinearMatMul": [(0, 1, 2), (3, 4, 5), (None, 6, 7)],
    "ConvInteger": [(0, None, 2), (1, None, 3)],
    "MatMulInteger": [(0, None, 2), (1, None, 3)],
}
_PER_AXIS_OPS = ("QuantizeLinear", "DequantizeLinear")  # they name their axis; the others: a channel axis


def check_quantization(model: onnx.ModelProto) -> None:
    """Refuse empty scales, zero points that do not pair with their scales, and per-channel parameters
    whose count fits no axis of the weight they quantize."""
    weights = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        for data_slot, scale_slot, zero_slot in _OPERANDS.get(node.op_type, []):
            data, scale, zero = (
                _weight_at(node, slot, weights) for slot in (data_slot, scale_slot, zero_slot)
            )
            _check_operand(node, data, scale, zero)


def _weight_at(node: onnx.NodeProto, slot: int | None, weights: dict) -> onnx.TensorProto | None:
    if slot is None or slot >= len(node.input) or not node.input[slot]:
        return None
    return weights.get(node.input[slot])


def _check_operand(node: onnx.NodeProto, data, scale, zero) -> None:
    label = node.name or node.op_type
    for param, what in ((scale, "scale"), (zero, "zero point")):
        if param is not None and math.prod(param.dims) == 0:
            raise ModelLoadError(
                f"Node '{label}' has an empty quantization {what} '{param.name}': the file is damaged."
            )
    if scale is not None and zero is not None and math.prod(scale.dims) != math.prod(zero.dims):
        raise ModelLoadError(
            f"Node '{label}' has {math.prod(zero.dims)} zero points for {math.prod(scale.dims)} quantization "
            "scales: the file is damaged."
        )
    param = scale if scale is not None else zero
    if data is None or param is None or math.prod(param.dims) <= 1:
        return  # per-tensor, or the quantized values are computed: nothing to match
    if not _fits(node, list(data.dims), list(param.dims)):
        raise ModelLoadError(
            f"Node '{label}' has quantization parameters of shape {list(param.dims)}, which fit no axis of "
            f"'{data.name}' (shape {list(data.dims)}): the file is damaged."
        )


def _fits(node: onnx.NodeProto, data: list[int], param: list[int]) -> bool:
    """Per-axis: one value per index of the axis; blocked (opset 21): one per block along it."""
    if node.op_type not in _PER_AXIS_OPS:
        return math.prod(param) in data  # operator-format ops quantize along an output-channel axis
    attrs = {a.name: a.i for a in node.attribute if a.type == onnx.AttributeProto.INT}
    if not data or not -len(data) <= attrs.get("axis", 1) < len(data):
        return False
    axis = attrs.get("axis", 1) % len(data)
    block = attrs.get("block_size", 0)
    if block <= 0:
        return len(param) == 1 and param[0] == data[axis]
    if len(param) != len(data):
        return False
    others_match = all(p == d for i, (p, d) in enumerate(zip(param, data, strict=True)) if i != axis)
    return others_match and param[axis] * block >= data[axis] > (param[axis] - 1) * block
