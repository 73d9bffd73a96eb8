"""Checks on a model's weights after loading: what onnxruntime would refuse later with its own words.

A weight of the wrong type (text where numbers go), a layer weight with no elements, or a convolution
whose `group` does not fit its weight and input make onnxruntime fail only when the model first runs,
which is calibration: the error then reads as if the user's data were wrong. They are refused here, in
one sentence naming the node and the weight.

Weights that are damaged but still load (NaN or infinite values), and weights Slimscope does not touch
(inside If/Loop/Scan subgraphs, or stored as sparse tensors), are said in notes when the model is
opened; optimizing refuses the former (`refuse_nonfinite_weights`) and warns about the latter.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import onnx
from onnx import TensorProto

from slimscope.core.errors import ModelLoadError, OptimizeError
from slimscope.core.layers import WEIGHTED_OPS, find_layers, tensor_array
from slimscope.core.shapes import infer_shapes

_CONV_OPS = frozenset({"Conv", "ConvTranspose"})
_FLOATS = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16})


def check_weights(model: onnx.ModelProto) -> None:
    """Refuse weights of a type their operator does not take, empty layer weights, and Conv groups that
    do not fit (the main graph, after constants were folded into weights)."""
    inits = {t.name: t for t in model.graph.initializer}
    opset = {e.domain or "ai.onnx": e.version for e in model.opset_import}.get("ai.onnx", 0)
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        for slot, name in enumerate(node.input):
            if name in inits:
                _check_type(node, slot, inits[name], opset)
                if node.op_type in WEIGHTED_OPS and math.prod(inits[name].dims) == 0:
                    raise ModelLoadError(
                        f"Weight '{name}' of node '{_node_name(node)}' ({node.op_type}) has shape "
                        f"{list(inits[name].dims)}, which holds no values: the file is damaged."
                    )
    _check_conv_groups(model, inits)


def _node_name(node: onnx.NodeProto) -> str:
    return node.name or (node.output[0] if node.output else node.op_type)


def _type_string(data_type: int) -> str:
    return f"tensor({TensorProto.DataType.Name(data_type).lower()})"


def _check_type(node: onnx.NodeProto, slot: int, tensor: TensorProto, opset: int) -> None:
    """The weight's element type is one the operator's schema allows in that input slot."""
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, "")
    except onnx.defs.SchemaError:
        return  # an operator or opset the graph checks already judged
    formal = schema.inputs[slot] if slot < len(schema.inputs) else None
    if formal is None:
        last = schema.inputs[-1] if schema.inputs else None
        if last is None or last.option != onnx.defs.OpSchema.FormalParameterOption.Variadic:
            return
        formal = last
    constraints = {c.type_param_str: c.allowed_type_strs for c in schema.type_constraints}
    allowed = constraints.get(formal.type_str, [formal.type_str])
    if not any(a.startswith("tensor(") for a in allowed) or _type_string(tensor.data_type) in allowed:
        return
    what = (
        "text (strings)"
        if tensor.data_type == TensorProto.STRING
        else f"{TensorProto.DataType.Name(tensor.data_type).lower()} values"
    )
    raise ModelLoadError(
        f"Weight '{tensor.name}' of node '{_node_name(node)}' holds {what}, which {node.op_type} does not "
        "take there: the file is damaged."
    )


def _check_conv_groups(model: onnx.ModelProto, inits: dict[str, TensorProto]) -> None:
    convs = [n for n in model.graph.node if n.op_type in _CONV_OPS and n.domain in ("", "ai.onnx")]
    if not convs:
        return
    shapes: dict[str, tuple] | None = None
    for node in convs:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        weight = inits.get(node.input[1]) if len(node.input) > 1 else None
        if group < 1:
            raise ModelLoadError(
                f"{node.op_type} '{_node_name(node)}' has group={group}; it must be at least 1: the file "
                "is damaged."
            )
        if weight is None or len(weight.dims) < 3:
            continue
        dims = list(weight.dims)
        if dims[0] % group:
            split = "output" if node.op_type == "Conv" else "input"
            raise ModelLoadError(
                f"{node.op_type} '{_node_name(node)}' splits the {dims[0]} {split} channels of its weight "
                f"{dims} into group={group} groups, which does not divide evenly: the file is damaged."
            )
        if shapes is None:
            shapes = infer_shapes(model, {})
        given = shapes.get(node.input[0])
        channels = given[1] if given and len(given) > 1 else None
        expected = dims[1] * group if node.op_type == "Conv" else dims[0]
        if isinstance(channels, int) and channels > 0 and channels != expected:
            raise ModelLoadError(
                f"{node.op_type} '{_node_name(node)}' receives {channels} input channel"
                f"{'s' if channels > 1 else ''}, but its weight "
                f"{dims} with group={group} takes {expected}: the file is damaged."
            )


# ---------------------------------------------------------------------------------------------------
# Damaged values and weights left alone: notes on opening, a refusal or a warning on optimizing


def nonfinite_weights(model: onnx.ModelProto) -> Iterator[tuple[str, str, int, int, int]]:
    """(weight, layer, NaN count, infinite count, size) of each layer weight or bias that is not finite."""
    inits = {t.name: t for t in model.graph.initializer}
    for layer in find_layers(model, {}):
        for name in (layer.weight, layer.bias):
            if name is None or inits[name].data_type not in _FLOATS:
                continue
            values = tensor_array(inits[name])
            nan = int(np.isnan(values).sum())
            inf = int(np.isinf(values).sum())
            if nan or inf:
                yield name, layer.name, nan, inf, int(values.size)


def _describe(nan: int, inf: int, size: int) -> str:
    parts = [f"{nan} NaN (not-a-number)"] if nan else []
    parts += [f"{inf} infinite"] if inf else []
    return f"{' and '.join(parts)} {'value' if nan + inf == 1 else 'values'} among its {size}"


def refuse_nonfinite_weights(model: onnx.ModelProto) -> None:
    """Optimizing measures weight and activation ranges: one NaN or infinity spoils them all."""
    for weight, layer, nan, inf, size in nonfinite_weights(model):
        raise OptimizeError(
            f"Weight '{weight}' of layer '{layer}' has {_describe(nan, inf, size)}, so its range cannot "
            "be measured and the model cannot be pruned or quantized: the file is damaged."
        )


def weight_notes(model: onnx.ModelProto) -> list[str]:
    """Notes for the opened model: damaged layer weights, and weights Slimscope leaves as they are."""
    notes = [
        f"Weight '{weight}' of layer '{layer}' has {_describe(nan, inf, size)}: the file is damaged, "
        "and Slimscope will not optimize it."
        for weight, layer, nan, inf, size in nonfinite_weights(model)
    ]
    untouched = untouched_weights(model)
    if untouched:
        notes.append(
            f"{untouched_sentence(untouched)} are not shown and are left as they are when optimizing."
        )
    return notes


def untouched_weights(model: onnx.ModelProto) -> dict[str, int]:
    """How many weights sit where Slimscope does not prune or quantize: inside the subgraphs of If, Loop
    and Scan nodes ("subgraph"), and stored as sparse tensors ("sparse")."""
    counts = {"subgraph": 0, "sparse": len(model.graph.sparse_initializer)}
    for node in model.graph.node:
        for attr in node.attribute:
            for graph in [attr.g] if attr.HasField("g") else list(attr.graphs):
                counts["subgraph"] += _weights_in(graph)
    return {kind: count for kind, count in counts.items() if count}


def _weights_in(graph: onnx.GraphProto) -> int:
    """Weights stored in a subgraph (and its own subgraphs): initializers, sparse ones, and Constant
    tensors of at least two elements (a scalar constant is a setting, not a weight)."""
    count = len(graph.initializer) + len(graph.sparse_initializer)
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Constant" and attr.HasField("t") and math.prod(attr.t.dims) >= 2:
                count += 1
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                count += _weights_in(sub)
    return count


def untouched_sentence(counts: dict[str, int]) -> str:
    """'3 weights inside If/Loop/Scan subgraphs and 1 sparse weight' (the start of a sentence)."""
    parts = []
    if counts.get("subgraph"):
        n = counts["subgraph"]
        parts.append(f"{n} {'weight' if n == 1 else 'weights'} inside If/Loop/Scan subgraphs")
    if counts.get("sparse"):
        n = counts["sparse"]
        parts.append(f"{n} {'weight' if n == 1 else 'weights'} stored as sparse tensors")
    return " and ".join(parts)
