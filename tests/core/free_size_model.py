"""A tiny network that leaves its input size open, shared by the core and window tests of free sizes."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CHANNELS, CLASSES = 8, 4
GEMM_MACS = CHANNELS * CLASSES


def conv_macs(height: int, width: int) -> int:
    return height * width * CHANNELS * 3 * 3 * 3  # 3x3 conv, padded: one output per input pixel


def free_size_model(seed: int = 3) -> onnx.ModelProto:
    """Conv → Relu → GlobalAveragePool → Flatten → Gemm on [N, 3, H, W]: any image size works."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((CHANNELS, 3, 3, 3)).astype(np.float32) * 0.3, "cw"),
        numpy_helper.from_array(rng.standard_normal(CHANNELS).astype(np.float32) * 0.1, "cb"),
        numpy_helper.from_array(rng.standard_normal((CLASSES, CHANNELS)).astype(np.float32), "fw"),
        numpy_helper.from_array(rng.standard_normal(CLASSES).astype(np.float32) * 0.1, "fb"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "free_size",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", CLASSES])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
