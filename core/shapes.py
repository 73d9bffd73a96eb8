"""Shapes of every value in a model for given input shapes, from onnx's shape inference.

Shape inference needs the dims of every weight but not its bytes, and copying a 100 MB model into the
C++ inferencer costs more than the inference itself, so it runs on a copy whose large weights carry
their dims only.
"""

from __future__ import annotations

import onnx

# Weights above this size are passed to shape inference without their data (small ones are kept:
# a Reshape's target shape must be readable).
_KEEP_DATA_BYTES = 4096


def infer_shapes(model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple]:
    """Map value name → shape tuple (ints, or None for an unknown dim). Never raises on odd models."""
    light = _weightless_copy(model, input_shapes)
    try:
        inferred = onnx.shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
    except Exception:  # inference is best effort: an odd model still gets a layer view, without MACs
        inferred = light
    shapes: dict[str, tuple] = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            dims = value.type.tensor_type.shape.dim
            shapes[value.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    for tensor in model.graph.initializer:
        shapes[tensor.name] = tuple(tensor.dims)
    return shapes


def _weightless_copy(model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]]) -> onnx.ModelProto:
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    graph = light.graph
    graph.name = model.graph.name
    graph.node.extend(model.graph.node)
    graph.output.extend(model.graph.output)
    graph.value_info.extend(model.graph.value_info)
    for value in model.graph.input:
        copy = graph.input.add()
        copy.CopyFrom(value)
        if value.name in input_shapes and value.type.HasField("tensor_type"):
            shape = copy.type.tensor_type.shape
            shape.ClearField("dim")
            for size in input_shapes[value.name]:
                shape.dim.add().dim_value = size
    for tensor in model.graph.initializer:
        if len(tensor.raw_data) > _KEEP_DATA_BYTES:
            stub = graph.initializer.add()
            stub.name, stub.data_type = tensor.name, tensor.data_type
            stub.dims.extend(tensor.dims)
        else:
            graph.initializer.append(tensor)
    return light
