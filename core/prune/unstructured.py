"""Unstructured and N:M pruning: zero the smallest-magnitude weights of each layer, exactly.

Masks are computed on the ONNX weights themselves (numpy), so every pruned weight is exactly 0.0 in
the model that onnxruntime runs. Targets are met exactly (the k smallest magnitudes, ties broken by
position), not approximately through a threshold.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import onnx

from slimscope.core.layers import Layer, tensor_array
from slimscope.core.recipe import PruneSpec


@dataclass
class MaskResult:
    model: onnx.ModelProto
    sparsity: dict[str, float] = field(default_factory=dict)  # achieved, per pruned layer
    notes: list[str] = field(default_factory=list)


def prune_weights(model: onnx.ModelProto, layers: list[Layer], specs: dict[str, PruneSpec]) -> MaskResult:
    """A copy of `model` whose listed layers are pruned as `specs` say (unstructured or N:M only)."""
    pruned = onnx.ModelProto()
    pruned.CopyFrom(model)
    result = MaskResult(pruned)
    inits = {t.name: t for t in pruned.graph.initializer}
    chosen = _one_layer_per_weight([layer for layer in layers if layer.name in specs], result.notes)
    weights: dict[str, np.ndarray] = {}
    for layer in chosen:
        if layer.quantized:
            result.notes.append(f"'{layer.name}' is already quantized; its integer weights were not pruned.")
            continue
        weights[layer.name] = np.array(tensor_array(inits[layer.weight]))  # writable copy
    global_groups: dict[tuple, list[Layer]] = defaultdict(list)
    for layer in chosen:
        if layer.name not in weights:
            continue
        spec = specs[layer.name]
        values = weights[layer.name]
        if spec.n is not None and spec.m is not None:
            _keep_n_of_m(values, _input_axis(layer, values.ndim), spec.n, spec.m)
        elif spec.threshold is not None:
            values[np.abs(values) < spec.threshold] = 0
        elif spec.scope == "global":
            global_groups[(spec.structure, spec.sparsity)].append(layer)
        else:
            _zero_smallest(values.reshape(-1), spec.sparsity or 0.0)
    for (_, sparsity), group in global_groups.items():
        _zero_smallest_across([weights[layer.name] for layer in group], sparsity)
    for layer in chosen:
        if layer.name in weights:
            _store(inits[layer.weight], weights[layer.name])
            values = weights[layer.name]
            result.sparsity[layer.name] = float(np.count_nonzero(values == 0) / max(values.size, 1))
    return result


def _one_layer_per_weight(layers: list[Layer], notes: list[str]) -> list[Layer]:
    """Layers sharing one weight tensor are pruned once, as the first of them says."""
    seen: dict[str, str] = {}
    chosen = []
    for layer in layers:
        if layer.weight in seen:
            notes.append(
                f"'{layer.name}' shares its weight with '{seen[layer.weight]}' and is pruned with it."
            )
            continue
        seen[layer.weight] = layer.name
        chosen.append(layer)
    return chosen


def _zero_smallest(flat: np.ndarray, sparsity: float) -> None:
    count = int(round(sparsity * flat.size))
    if count <= 0:
        return
    smallest = np.argpartition(np.abs(flat), count - 1)[:count] if count < flat.size else slice(None)
    flat[smallest] = 0


def _zero_smallest_across(arrays: list[np.ndarray], sparsity: float) -> None:
    """One ranking over all arrays together: together they reach `sparsity` exactly."""
    sizes = [a.size for a in arrays]
    magnitudes = np.concatenate([np.abs(a.reshape(-1)) for a in arrays])
    count = int(round(sparsity * magnitudes.size))
    if count <= 0:
        return
    mask = np.zeros(magnitudes.size, dtype=bool)
    mask[np.argpartition(magnitudes, count - 1)[:count] if count < magnitudes.size else slice(None)] = True
    for array, part in zip(arrays, np.split(mask, np.cumsum(sizes)[:-1]), strict=True):
        array.reshape(-1)[part] = 0


def _input_axis(layer: Layer, ndim: int) -> int:
    """The weight axis that runs over the layer's inputs (the reduction dimension)."""
    if layer.kind == "Conv":
        return 1
    if layer.kind == "ConvTranspose":
        return 0
    if ndim == 1:
        return 0
    return ndim - 2 if layer.out_axis == ndim - 1 else ndim - 1


def _keep_n_of_m(values: np.ndarray, axis: int, n: int, m: int) -> None:
    """In every run of m consecutive weights along `axis`, keep the n largest magnitudes."""
    moved = np.moveaxis(values, axis, -1)
    length = moved.shape[-1]
    padded_length = -(-length // m) * m
    magnitudes = np.full((*moved.shape[:-1], padded_length), -1.0, dtype=np.float64)  # padding loses
    magnitudes[..., :length] = np.abs(moved)
    groups = magnitudes.reshape(*moved.shape[:-1], padded_length // m, m)
    drop = np.argsort(groups, axis=-1, kind="stable")[..., : m - n]
    keep = np.ones(groups.shape, dtype=bool)
    np.put_along_axis(keep, drop, False, axis=-1)
    keep = keep.reshape(*moved.shape[:-1], padded_length)[..., :length]
    moved[~keep] = 0  # `moved` is a view: this writes into `values`


def _store(tensor: onnx.TensorProto, values: np.ndarray) -> None:
    for typed in ("float_data", "double_data", "int32_data", "int64_data"):
        tensor.ClearField(typed)
    tensor.raw_data = np.ascontiguousarray(values).astype(values.dtype.newbyteorder("<")).tobytes()
