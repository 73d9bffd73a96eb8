"""A one-layer classifier whose classes are nearly tied: its ten weight columns differ by ~1e-3 while int8
steps are ~2e-2, so any quantization or pruning changes most top-1 answers. No automatic recipe can meet a
small budget on it; tests of `auto`'s honesty use it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FEATURES, CLASSES = 32, 10


def write_near_tie_model(folder: Path, samples: int = 60) -> tuple[Path, Path]:
    """The model and `samples` unlabelled inputs (.npz), written into `folder`."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(FEATURES, 1))
    weight = (base + 1e-3 * rng.normal(size=(FEATURES, CLASSES))).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["logits"], name="near_tie")],
        "near_tie",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", FEATURES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", CLASSES])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    model_path, data_path = folder / "near_tie.onnx", folder / "near_tie_data.npz"
    onnx.save(model, model_path)
    np.savez(data_path, x=np.abs(rng.normal(size=(samples, FEATURES))).astype(np.float32))
    return model_path, data_path
