"""Name the free dimensions that exporters write as numbers.

PaddlePaddle's converter (and some older exporters) write a free dimension as `dim_value: -1` (or 0)
instead of leaving the value unset or naming it. onnxruntime accepts that, but every reader of shapes
then sees a batch of -1 samples. Here such dims become named ones (`dim_param`), which is what ONNX
means by a free dimension, so the rest of Slimscope and the exported model read them as free.
"""

from __future__ import annotations

import onnx


def name_free_dims(model: onnx.ModelProto) -> int:
    """Turn non-positive `dim_value`s of the graph's inputs, outputs and value_info into named free
    dims; return how many were changed."""
    changed = 0
    graph = model.graph
    for group, prefix in ((graph.input, "in"), (graph.output, "out"), (graph.value_info, "v")):
        for position, value in enumerate(group):
            if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
                continue
            for axis, dim in enumerate(value.type.tensor_type.shape.dim):
                if dim.HasField("dim_value") and dim.dim_value <= 0:
                    dim.Clear()
                    dim.dim_param = "batch" if axis == 0 else f"{prefix}{position}_dim{axis}"
                    changed += 1
    return changed
