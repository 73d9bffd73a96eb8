"""Models shaped like production exports (PaddlePaddle, older exporters) optimize and evaluate: weights
folded into constants, BatchNormalization left in the graph, external data, free input sizes written as -1,
opset 11, a Slice whose bounds are weights, a softmax output and unused declared domains.

The Slice is the trap: given a ModelProto, onnxruntime's pre-processing swaps its weights for `foo.bin`
placeholders in that very proto, its optimizer then cannot read the Slice bounds and fails, and the
damaged proto came back as if nothing happened ("Data of TensorProto ... should be stored in foo.bin").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from slimscope.core.layers import find_layers
from slimscope.core.loading import load_model
from slimscope.core.optimize import iter_optimize
from slimscope.core.quantize.prepare import prepare_model
from slimscope.core.recipe import parse_recipe
from slimscope.core.tasks import run_sync

INT8 = {"version": 1, "defaults": {"quantize": {"weight_bits": 8, "activation_bits": 8}}, "layers": {}}


def paddle_like_model(opset: int = 11, extra_domains: tuple[str, ...] = ()) -> onnx.ModelProto:
    """x[-1,3,-1,-1] → Conv → BatchNormalization → Relu → Slice (bounds from weights, and from Constant
    nodes) → Conv → GlobalAveragePool → Flatten → MatMul + Add → Softmax."""
    rng = np.random.default_rng(0)

    def weight(name, *shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [
        weight("conv1.w", 16, 3, 3, 3), weight("conv2.w", 8, 12, 3, 3), weight("fc.w", 8, 5), weight("fc.b", 5),
        numpy_helper.from_array(np.abs(rng.standard_normal(16)).astype(np.float32) + 0.5, "bn.scale"),
        weight("bn.bias", 16), weight("bn.mean", 16),
        numpy_helper.from_array(np.abs(rng.standard_normal(16)).astype(np.float32) + 0.5, "bn.var"),
        numpy_helper.from_array(np.array([2], np.int64), "slice.starts"),
        numpy_helper.from_array(np.array([1], np.int64), "slice.axes"),
    ]  # fmt: skip
    nodes = [
        helper.make_node("Constant", [], ["slice.ends"], value=numpy_helper.from_array(np.array([14], np.int64))),
        helper.make_node("Conv", ["x", "conv1.w"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["b1"]),
        helper.make_node("Relu", ["b1"], ["r1"]),
        helper.make_node("Slice", ["r1", "slice.starts", "slice.ends", "slice.axes"], ["s1"]),
        helper.make_node("Conv", ["s1", "conv2.w"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("MatMul", ["f", "fc.w"], ["m"]),
        helper.make_node("Add", ["m", "fc.b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["prob"], axis=1),
    ]  # fmt: skip
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, -1, -1])
    y = helper.make_tensor_value_info("prob", TensorProto.FLOAT, [-1, 5])
    graph = helper.make_graph(nodes, "paddle_like", [x], [y], inits)
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in extra_domains]
    model = helper.make_model(graph, opset_imports=imports, producer_name="PaddlePaddle")
    model.ir_version = 7
    return model


def samples(count: int, height: int = 24, width: int = 40, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 3, height, width)).astype(np.float32)


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def has_external_data(model: onnx.ModelProto) -> bool:
    return any(t.data_location == TensorProto.EXTERNAL for t in model.graph.initializer)


@pytest.fixture
def paddle_file(tmp_path: Path) -> Path:
    path = tmp_path / "inference.onnx"
    onnx.save_model(paddle_like_model(), path)
    return path


def test_free_sizes_written_as_minus_one_are_read_as_free(paddle_file: Path):
    loaded = load_model(paddle_file)
    dims = loaded.model.graph.input[0].type.tensor_type.shape.dim
    assert [d.HasField("dim_value") for d in dims] == [False, True, False, False]
    assert any("-1 or 0" in note for note in loaded.notes)


def test_pre_processing_never_leaves_weights_pointing_to_foo_bin(paddle_file: Path):
    loaded = load_model(paddle_file)
    before = loaded.model.SerializeToString()
    prepared = prepare_model(loaded.model, find_layers(loaded.model, {}), {"x": (1, 3, 24, 40)})
    assert not has_external_data(prepared.model)
    assert loaded.model.SerializeToString() == before  # the caller's model is untouched
    np.testing.assert_allclose(run(prepared.model, samples(2)), run(loaded.model, samples(2)), atol=1e-5)


@pytest.mark.parametrize("external", [False, True], ids=["inline", "external-data"])
def test_int8_on_a_paddle_like_model_runs_and_keeps_free_sizes(tmp_path: Path, external: bool):
    path = tmp_path / "model.onnx"
    onnx.save_model(paddle_like_model(), path, save_as_external_data=external, size_threshold=0,
                    location="model.onnx.data")  # fmt: skip
    loaded = load_model(path)
    result = run_sync(iter_optimize(loaded, parse_recipe(INT8), samples(16)))
    model = result.model
    assert not has_external_data(model)
    assert {n.op_type for n in model.graph.node} >= {"QuantizeLinear", "DequantizeLinear"}
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert not dims[2].HasField("dim_value") and not dims[3].HasField("dim_value")
    for height, width in ((24, 40), (32, 32)):  # the exported model still takes any size
        x = samples(4, height, width, seed=2)
        reference, quantized = run(loaded.model, x), run(model, x)
        assert quantized.shape == reference.shape
        assert np.abs(quantized - reference).max() < 0.1


def test_declared_but_unused_domains_are_dropped_not_refused(tmp_path: Path):
    path = tmp_path / "declared.onnx"
    onnx.save_model(paddle_like_model(extra_domains=("ai.onnx.training", "com.example.unused")), path)
    loaded = load_model(path)
    domains = {entry.domain for entry in loaded.model.opset_import}
    assert "ai.onnx.training" not in domains and "com.example.unused" not in domains
    assert any("never uses" in note for note in loaded.notes)
    run(loaded.model, samples(1))
