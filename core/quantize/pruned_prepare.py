"""Reuse a prepared model for a pruned copy of the same model, instead of preparing it again.

Preparing (onnxruntime's `quant_pre_process`: symbolic shape inference, graph optimization) is the slow
part of re-quantizing after a pruning edit — seconds on a ResNet-18 — yet unstructured and N:M pruning
change only weight *values*, never the graph. What pre-processing does to a weight is per output channel
(BatchNormalization folding scales each channel, MatMul + Add → Gemm keeps it as is), so a weight that was
zero before preparing is zero after it, and every other element maps exactly as in the unpruned model.
Hence: prepared(pruned) = prepared(base) with the same elements zeroed. This is checked, not assumed:
the graphs must be identical, every changed initializer must be a layer weight that differs from the base
only by zeros, and the prepared weight must have the same shape; otherwise the caller prepares afresh.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from slimscope.core.layers import Layer, find_layers
from slimscope.core.quantize.prepare import PreparedModel


def prepare_from_base(
    base: onnx.ModelProto, base_prepared: PreparedModel, model: onnx.ModelProto, layers: list[Layer]
) -> PreparedModel | None:
    """`model`'s prepared form derived from `base_prepared`, or None when `model` is not `base` with
    some layer weights zeroed."""
    if not _same_graph(base, model):
        return None
    changed = _changed_initializers(base, model)
    if changed is None:
        return None
    layer_of_weight = {layer.weight: layer.name for layer in layers}
    prepared_layers = {layer.name: layer for layer in find_layers(base_prepared.model, {})}
    result = onnx.ModelProto()
    result.CopyFrom(base_prepared.model)
    initializers = {tensor.name: tensor for tensor in result.graph.initializer}
    for name, (old, new) in changed.items():
        target = prepared_layers.get(layer_of_weight.get(name, ""))
        if target is None or target.weight not in initializers:
            return None
        zeroed = new == 0
        if old.shape != new.shape or not np.array_equal(new, np.where(zeroed, 0, old)):
            return None  # not only zeros added: the values themselves changed
        prepared = numpy_helper.to_array(initializers[target.weight])
        if prepared.shape != new.shape or not _scaled_per_channel(old, prepared, target.out_axis):
            return None  # pre-processing did more than scale channels (a transpose, a mix): prepare afresh
        masked = np.where(zeroed, np.zeros((), prepared.dtype), prepared)
        initializers[target.weight].CopyFrom(numpy_helper.from_array(masked, target.weight))
    return PreparedModel(result, base_prepared.notes, base_prepared.lost_layers)


def _scaled_per_channel(before: np.ndarray, after: np.ndarray, axis: int, rtol: float = 1e-4) -> bool:
    """True when `after` is `before` times one factor per slice along `axis` (zeros stay zeros)."""
    before = np.moveaxis(before.astype(np.float64), axis, 0).reshape(before.shape[axis], -1)
    after = np.moveaxis(after.astype(np.float64), axis, 0).reshape(after.shape[axis], -1)
    if not np.array_equal(before == 0, after == 0):
        return False
    magnitude = np.abs(before)
    pivot = magnitude.argmax(axis=1)  # the largest element of each channel fixes its factor
    rows = np.arange(before.shape[0])
    scale = np.divide(
        after[rows, pivot], before[rows, pivot], out=np.zeros(len(rows)), where=magnitude[rows, pivot] > 0
    )
    return bool(
        np.allclose(after, before * scale[:, None], rtol=rtol, atol=1e-12 + rtol * np.abs(after).max())
    )


def _same_graph(a: onnx.ModelProto, b: onnx.ModelProto) -> bool:
    ga, gb = a.graph, b.graph
    if len(ga.node) != len(gb.node) or len(ga.initializer) != len(gb.initializer):
        return False
    if list(a.opset_import) != list(b.opset_import):
        return False
    pairs = [(ga.input, gb.input), (ga.output, gb.output), (ga.node, gb.node)]
    return all(
        x.SerializeToString(deterministic=True) == y.SerializeToString(deterministic=True)
        for first, second in pairs
        for x, y in zip(first, second, strict=True)
    )


def _changed_initializers(
    base: onnx.ModelProto, model: onnx.ModelProto
) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """Initializers whose values differ, as (base, model) arrays; None when names, types or shapes differ."""
    base_tensors = {tensor.name: tensor for tensor in base.graph.initializer}
    changed = {}
    for tensor in model.graph.initializer:
        other = base_tensors.get(tensor.name)
        if other is None or other.data_type != tensor.data_type or list(other.dims) != list(tensor.dims):
            return None
        if tensor.raw_data and tensor.raw_data == other.raw_data:
            continue  # the common case, a byte comparison
        old, new = numpy_helper.to_array(other), numpy_helper.to_array(tensor)
        if not np.array_equal(old, new):
            changed[tensor.name] = (old, new)
    return changed
