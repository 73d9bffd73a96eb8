"""Weights stored as sparse tensors (`graph.sparse_initializer`) become ordinary dense weights on loading.

Nothing past the loader reads sparse initializers: the layer view, pruning and onnxruntime's quantizer
walk `graph.initializer` only, so a sparse layer weight was silently missing from the layers and then
failed quantization with onnxruntime's own words. Dense, it is a weight like any other (the exported
model stores it dense; pruning can make it sparse again where that pays).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import numpy_helper

from slimscope.core.errors import ModelLoadError
from slimscope.core.loading.onnx_checks import MAX_TENSOR_BYTES


def densify_sparse_weights(model: onnx.ModelProto) -> int:
    """Move the main graph's sparse initializers into `graph.initializer` as dense tensors; how many."""
    graph = model.graph
    count = len(graph.sparse_initializer)
    for sparse in graph.sparse_initializer:
        graph.initializer.append(_dense(sparse))
    graph.ClearField("sparse_initializer")
    return count


def _dense(sparse: onnx.SparseTensorProto) -> onnx.TensorProto:
    name = sparse.values.name or "(unnamed)"
    dims = [int(d) for d in sparse.dims]

    def damaged(problem: str) -> ModelLoadError:
        return ModelLoadError(f"Sparse weight '{name}' {problem}: the file is damaged.")

    if any(d < 0 for d in dims):
        raise damaged(f"has a negative dimension {dims}")
    values = numpy_helper.to_array(sparse.values).reshape(-1)
    size = math.prod(dims)
    if size * values.dtype.itemsize > MAX_TENSOR_BYTES:
        raise ModelLoadError(
            f"Sparse weight '{name}' declares shape {dims}, more than the {MAX_TENSOR_BYTES >> 30} GiB "
            "Slimscope allocates for one tensor."
        )
    indices = numpy_helper.to_array(sparse.indices).astype(np.int64, copy=False)
    if indices.ndim == 2 and indices.shape[1] == len(dims) and len(dims) > 0:
        if (indices < 0).any() or (indices >= np.array(dims)).any():
            raise damaged("has indices outside its shape")
        indices = np.ravel_multi_index(tuple(indices.T), dims) if len(indices) else indices.reshape(-1)
    indices = indices.reshape(-1)
    if len(indices) != len(values):
        raise damaged(f"has {len(values)} values but {len(indices)} indices")
    if len(indices) and (indices.min() < 0 or indices.max() >= size):
        raise damaged("has indices outside its shape")
    dense = np.zeros(size, dtype=values.dtype)
    dense[indices] = values
    return numpy_helper.from_array(dense.reshape(dims), sparse.values.name)
