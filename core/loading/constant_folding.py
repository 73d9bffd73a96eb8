"""Fold nodes that compute from constants alone into initializers, so computed weights become real ones.

Old exporters store weights as `Constant` nodes, or compute them (`ConstantOfShape`, a `Reshape` or
`Transpose` of an initializer); the layer view and the optimizer need them as initializers. onnx's
reference evaluator computes the values (well-kept and exact for every standard op); this module only
decides what to fold and guards the size of what it would allocate before evaluating anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from slimscope.core.errors import ModelLoadError
from slimscope.core.loading.onnx_checks import MAX_TENSOR_BYTES

# Random ops are not constants; Q/DQ of a weight is how a quantized model stores it: keep it quantized.
_NEVER_FOLD = frozenset(
    {
        "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial",
        "Bernoulli", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "If", "Loop", "Scan",
    }
)  # fmt: skip


def fold_constants(model: onnx.ModelProto) -> int:
    """Fold in place; return how many nodes became initializers."""
    graph = model.graph
    consts: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
    outputs = {o.name for o in graph.output}
    opset = {e.domain or "": e.version for e in model.opset_import}
    folded: list[onnx.NodeProto] = []
    folded_ids: set[int] = set()
    changed = True
    while changed:  # nodes are usually in order; repeat for files that are not
        changed = False
        for node in graph.node:
            if id(node) in folded_ids or not _foldable(node, consts, outputs):
                continue
            values = _evaluate(node, consts, opset)
            if values is None:
                continue
            for name, value in zip(node.output, values, strict=False):
                consts[name] = numpy_helper.from_array(np.asarray(value), name)
            folded.append(node)
            folded_ids.add(id(node))
            changed = True
    if not folded:
        return 0
    _rewrite(graph, folded, consts)
    return len(folded)


def _foldable(node: onnx.NodeProto, consts: dict, outputs: set[str]) -> bool:
    if node.domain not in ("", "ai.onnx") or node.op_type in _NEVER_FOLD:
        return False
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        return False
    if any(o in outputs for o in node.output):
        return False
    return all(not name or name in consts for name in node.input)


def _evaluate(node: onnx.NodeProto, consts: dict, opset: dict[str, int]) -> list | None:
    label = node.name or node.op_type
    if node.op_type == "Constant":
        return [_constant_value(node, label)]
    try:
        inputs = [numpy_helper.to_array(consts[n]) if n else None for n in node.input]
    except Exception as exc:  # onnx raises ValueError/TypeError/... on a tensor it cannot decode
        raise ModelLoadError(
            f"A constant read by node '{label}' cannot be decoded: the file is damaged."
        ) from exc
    mini = _single_node_model(node, inputs, opset)
    numel = _inferred_output_numel(mini)
    if numel is None:
        numel = _estimated_output_numel(node, inputs)
    if numel is None:
        return None  # size unknown before evaluating: leave the node for onnxruntime to fold
    if numel * 8 > MAX_TENSOR_BYTES:
        raise ModelLoadError(
            f"Node '{label}' would create a constant of {numel:,} elements, more than Slimscope "
            "allocates for one tensor; the file is malformed or hostile."
        )
    from onnx.reference import ReferenceEvaluator  # deferred: only needed for computed constants

    try:
        return list(ReferenceEvaluator(mini).run(None, {}))
    except MemoryError as exc:
        raise ModelLoadError(f"Node '{label}' computes a constant too large to hold in memory.") from exc
    except Exception:  # an op the reference evaluator lacks: leave it for onnxruntime to fold
        return None


def _single_node_model(node: onnx.NodeProto, inputs: list, opset: dict[str, int]) -> onnx.ModelProto:
    feeds = {name: value for name, value in zip(node.input, inputs, strict=True) if name}
    graph = helper.make_graph(
        [node],
        "fold",
        [],
        [helper.make_value_info(o, onnx.TypeProto()) for o in node.output],
        [numpy_helper.from_array(v, k) for k, v in feeds.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opset.items()])


def _inferred_output_numel(mini: onnx.ModelProto) -> int | None:
    """Largest output of a one-node model, from onnx's shape inference: nothing is allocated."""
    try:
        inferred = onnx.shape_inference.infer_shapes(mini, strict_mode=False, data_prop=True)
    except Exception:  # inference is a size guard here; failing it just means "unknown"
        return None
    sizes = []
    for value in inferred.graph.output:
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape"):
            return None
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim]
        if any(d < 0 for d in dims):
            return None
        sizes.append(math.prod(dims))
    return max(sizes, default=None)


_CONSTANT_FIELDS = {
    "value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64,
    "value_string": None, "value_strings": None,
}  # fmt: skip


def _constant_value(node: onnx.NodeProto, label: str) -> np.ndarray:
    damaged = f"The Constant node '{label}' holds no readable value: the file is damaged."
    if len(node.attribute) != 1:
        raise ModelLoadError(damaged)
    attr = node.attribute[0]
    if attr.name == "sparse_value":
        raise ModelLoadError(f"Constant '{label}' holds a sparse tensor, which Slimscope cannot read yet.")
    if attr.name != "value" and attr.name not in _CONSTANT_FIELDS:
        raise ModelLoadError(damaged)
    try:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        dtype = _CONSTANT_FIELDS[attr.name]
        return np.array(helper.get_attribute_value(attr), dtype=dtype)
    except Exception as exc:  # onnx raises assorted errors on a tensor it cannot decode
        raise ModelLoadError(damaged) from exc


def _shape_arg(value) -> int | None:
    if value is None:
        return None
    return math.prod(int(max(d, 1)) for d in np.asarray(value).reshape(-1))


def _range_count(i: list) -> int | None:
    start, limit, delta = (float(np.asarray(v).reshape(-1)[0]) for v in i[:3])
    return None if delta == 0 else max(0, math.ceil((limit - start) / delta))


_EXPANDING: dict[str, Callable[[list], int | None]] = {
    "ConstantOfShape": lambda i: _shape_arg(i[0]),
    "Expand": lambda i: max(i[0].size, _shape_arg(i[1]) or 0),
    "Tile": lambda i: i[0].size * (_shape_arg(i[1]) or 1),
    "Range": _range_count,
    "MatMul": lambda i: i[0].size // max(i[0].shape[-1], 1) * i[1].shape[-1] if i[1].ndim else None,
}


def _estimated_output_numel(node: onnx.NodeProto, inputs: list) -> int | None:
    """Elements a node would allocate, for the ops whose output can dwarf their inputs."""
    estimate = _EXPANDING.get(node.op_type)
    if estimate is None:
        return None
    try:
        return estimate(inputs)
    except (IndexError, ValueError, TypeError, AttributeError):
        return None


def _rewrite(graph: onnx.GraphProto, folded: list[onnx.NodeProto], consts: dict) -> None:
    folded_ids = {id(n) for n in folded}
    remaining = [n for n in graph.node if id(n) not in folded_ids]
    needed = {name for n in remaining for name in n.input if name}
    needed |= _names_read_by_subgraphs(remaining)
    needed |= {o.name for o in graph.output}
    existing = {t.name for t in graph.initializer}
    new_inits = [consts[name] for n in folded for name in n.output if name in needed and name not in existing]
    del graph.node[:]
    graph.node.extend(remaining)
    graph.initializer.extend(new_inits)
    read_by_folded = {name for n in folded for name in n.input}
    inputs = {v.name for v in graph.input}
    unused = [t for t in graph.initializer if t.name in read_by_folded and t.name not in needed | inputs]
    for tensor in unused:
        graph.initializer.remove(tensor)


def _names_read_by_subgraphs(nodes) -> set[str]:
    names: set[str] = set()
    for node in nodes:
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                names.update(i for n in sub.node for i in n.input)
                names |= _names_read_by_subgraphs(sub.node)
    return names
