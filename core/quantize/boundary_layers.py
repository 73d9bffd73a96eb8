"""The first and last layers of a model, and the recipe's `ptq.keep_first_last` applied to them.

The first layer sees raw pixels and has few input channels (its weight ranges are the widest of the
network); the last writes the logits every prediction is read from. Both hold a tiny share of the
compute, so keeping them at higher precision costs little speed and removes error where it matters most.
"""

from __future__ import annotations

from collections.abc import Collection

import onnx

from slimscope.core.layers import find_layers
from slimscope.core.recipe import QuantSpec

# The settings "int16" gives a boundary layer: 16-bit weights and activations (onnxruntime has no
# 16-bit integer kernels on CPU, so the layer runs in float on dequantized values, nearly float-exact).
# What stays at 16 bits is the first layer's input (the pixels) and the last layer's output (the
# logits); a tensor between a boundary layer and an 8-bit neighbour takes the neighbour's 8 bits, as
# onnxruntime's quantizer merges an activation (ReLU) or pass-through op (Flatten) into that tensor.
INT16 = QuantSpec(weight_bits=16, activation_bits=16)


def boundary_layers(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    """(first, last) layer names: layers no other layer feeds, and layers that feed no other layer on
    their way to a graph output. Most classifiers have one of each; a multi-branch stem has several."""
    layers = {layer.node_index: layer.name for layer in find_layers(model, {})}
    nodes = list(model.graph.node)
    upstream: dict[str, bool] = {}  # tensor → a layer lies before it
    first = []
    for index, node in enumerate(nodes):
        fed = any(upstream.get(name, False) for name in node.input)
        if index in layers and not fed:
            first.append(layers[index])
        for name in node.output:
            upstream[name] = fed or index in layers
    downstream: dict[str, bool] = {}  # tensor → a layer lies after it
    last = []
    for index in reversed(range(len(nodes))):
        node = nodes[index]
        feeds = any(downstream.get(name, False) for name in node.output)
        if index in layers and not feeds:
            last.append(layers[index])
        for name in node.input:
            downstream[name] = downstream.get(name, False) or feeds or index in layers
    return first, last[::-1]


def keep_first_last(
    model: onnx.ModelProto,
    settings: dict[str, QuantSpec | None],
    mode: str | None,
    explicit: Collection[str] = (),
) -> tuple[dict[str, QuantSpec | None], list[str]]:
    """`settings` with the first and last layers kept in float (`mode` "float") or at 16 bits ("int16");
    layers the recipe sets explicitly (`explicit`) and layers not quantized anyway are left as they are."""
    if mode is None:
        return settings, []
    first, last = boundary_layers(model)
    changed = {}
    for name in dict.fromkeys([*first, *last]):
        if name in explicit or settings.get(name, QuantSpec()) is None:
            continue
        changed[name] = None if mode == "float" else INT16
    if not changed:
        return settings, []
    words = "in float" if mode == "float" else "at 16 bits (weights and activations)"
    note = f"Kept the first and last layers {words}: {', '.join(map(repr, changed))}."
    return {**settings, **changed}, [note]
