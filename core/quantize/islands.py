"""Float islands: a layer left in float between quantized layers.

In a QDQ model onnxruntime fuses DequantizeLinear → op → QuantizeLinear into one integer kernel; a float
layer in the middle of a quantized chain breaks that, and every inference dequantizes its input and
quantizes its output again. On CPUs that round trip often costs more time than the float layer saves in
accuracy, so the optimizer says so, naming the layer and its quantized neighbours.
"""

from __future__ import annotations

from collections.abc import Iterable

import onnx

from slimscope.core.layers import find_layers

# Ops a chain of quantized layers passes through without leaving the integer domain in onnxruntime's QDQ
# graphs (elementwise and shape ops it quantizes or moves Q/DQ across); anything else ends the walk.
_PASS_THROUGH = frozenset({
    "Relu", "Clip", "LeakyRelu", "Add", "Mul", "MaxPool", "AveragePool", "GlobalAveragePool", "Flatten",
    "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Resize", "BatchNormalization", "Identity",
    "Pad", "Sigmoid", "HardSigmoid", "HardSwish",
})  # fmt: skip


def float_islands(model: onnx.ModelProto, quantized: Iterable[str]) -> list[tuple[str, list[str], list[str]]]:
    """(float layer, quantized layers before it, quantized layers after it) for every layer left float
    whose neighbouring layers, before and after, are all quantized."""
    quantized = set(quantized)
    layers = find_layers(model, {})
    node_layer = {layer.node_index: layer.name for layer in layers}
    nodes = list(model.graph.node)
    producer = {output: index for index, node in enumerate(nodes) for output in node.output}
    consumers: dict[str, list[int]] = {}
    for index, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(index)

    def neighbours(start: int, forward: bool) -> set[str]:
        found: set[str] = set()
        seen: set[int] = set()
        stack = _next(nodes[start], forward, producer, consumers)
        while stack:
            index = stack.pop()
            if index in seen:
                continue
            seen.add(index)
            if index in node_layer:
                found.add(node_layer[index])
            elif nodes[index].op_type in _PASS_THROUGH:
                stack.extend(_next(nodes[index], forward, producer, consumers))
        return found

    islands = []
    for layer in layers:
        if layer.name in quantized:
            continue
        before = neighbours(layer.node_index, forward=False)
        after = neighbours(layer.node_index, forward=True)
        if before and after and before <= quantized and after <= quantized:
            islands.append((layer.name, sorted(before), sorted(after)))
    return islands


def island_warnings(model: onnx.ModelProto, quantized: Iterable[str]) -> list[str]:
    return [
        f"Mixed precision: '{name}' stays float between quantized layers ({', '.join(map(repr, before[:2]))} → "
        f"{', '.join(map(repr, after[:2]))}); every inference dequantizes its input and quantizes its output "
        "again, which often costs more time than it saves in accuracy. Quantize it too, or keep its "
        "neighbours float with it."
        for name, before, after in float_islands(model, quantized)
    ]


def _next(node: onnx.NodeProto, forward: bool, producer: dict[str, int], consumers: dict[str, list[int]]):
    if forward:
        return [index for output in node.output for index in consumers.get(output, [])]
    return [producer[name] for name in node.input if name in producer]
