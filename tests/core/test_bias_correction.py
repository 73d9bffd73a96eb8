"""Bias correction removes the mean output shift quantization leaves per channel (also for a layer that
had no bias), and `ptq.keep_first_last` keeps the model's boundary layers in float or at 16 bits."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from slimscope.core.loading import load_model
from slimscope.core.optimize import iter_optimize
from slimscope.core.quantize import iter_quantize
from slimscope.core.quantize.bias_correction import iter_correct_bias
from slimscope.core.quantize.boundary_layers import boundary_layers
from slimscope.core.recipe import PtqSpec, QuantSpec, parse_recipe
from slimscope.core.tasks import run_sync
from slimscope.resources import DEMO_CALIBRATION, DEMO_MODEL

C = 16


def shifted_model() -> onnx.ModelProto:
    """conv1 (channel ranges spread over 10^3, so per-tensor int8 rounds the small channels coarsely)
    → ReLU → conv2 without a bias. Inputs are positive, so rounding errors shift the means."""
    rng = np.random.default_rng(0)
    spread = np.logspace(-3, 0, C).astype(np.float32)
    w1 = (rng.uniform(0.2, 1.0, (C, 3, 3, 3)) * spread[:, None, None, None]).astype(np.float32)
    b1 = np.zeros(C, np.float32)
    w2 = rng.standard_normal((4, C, 1, 1)).astype(np.float32) / spread[None, :, None, None] / 100
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["a1"], name="relu1"),
        helper.make_node("Conv", ["a1", "w2"], ["y"], name="conv2"),
    ]
    graph = helper.make_graph(
        nodes,
        "shifted",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4, 8, 8])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def mean_shift(run_onnx, reference: onnx.ModelProto, model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """|mean(float - quantized)| of the output, per channel."""
    diff = run_onnx(reference, {"x": x})[0] - run_onnx(model, {"x": x})[0]
    return np.abs(diff.mean(axis=(0, 2, 3)))


def test_bias_correction_removes_the_mean_shift(run_onnx):
    model = shifted_model()
    rng = np.random.default_rng(1)
    calibration, held_out = (rng.uniform(0, 1, (n, 3, 8, 8)).astype(np.float32) for n in (64, 64))
    settings = {name: QuantSpec(granularity="per_tensor") for name in ("conv1", "conv2")}
    plain = run_sync(iter_quantize(model, settings, calibration))
    feeds = [{"x": calibration[i : i + 8]} for i in range(0, 64, 8)]
    corrected = run_sync(iter_correct_bias(model, plain.model, feeds))
    before = mean_shift(run_onnx, model, plain.model, held_out)
    after = mean_shift(run_onnx, model, corrected.model, held_out)
    assert before.mean() > 0.02  # the shift is real ...
    assert after.mean() < before.mean() / 4  # ... and mostly gone, on samples the correction never saw
    assert set(corrected.shift_after) == {"conv1", "conv2"}
    assert all(corrected.shift_after[k] < corrected.shift_before[k] for k in ("conv1", "conv2"))
    # conv2 had no bias: it got one as int32 codes, the form onnxruntime fuses into integer kernels.
    conv2 = next(n for n in corrected.model.graph.node if n.name == "conv2")
    source = next(n for n in corrected.model.graph.node if conv2.input[2] in n.output)
    codes = next(t for t in corrected.model.graph.initializer if t.name == source.input[0])
    assert source.op_type == "DequantizeLinear" and codes.data_type == TensorProto.INT32
    onnx.checker.check_model(corrected.model)
    # Through the quantizer's own switch: the same correction.
    switched = run_sync(iter_quantize(model, settings, calibration, ptq=PtqSpec(bias_correction=True)))
    assert mean_shift(run_onnx, model, switched.model, held_out).mean() < before.mean() / 4
    assert any("Bias correction adjusted 2 layers" in note for note in switched.notes)


@pytest.fixture(scope="module")
def demo():
    return load_model(DEMO_MODEL), np.load(DEMO_CALIBRATION)["x"][:32]


def weight_type(model: onnx.ModelProto, layer: str) -> int:
    """The stored type of a layer's weight (through its DequantizeLinear when quantized)."""
    node = next(n for n in model.graph.node if n.name == layer)
    source = next((n for n in model.graph.node if node.input[1] in n.output), None)
    stored = node.input[1] if source is None else source.input[0]
    return next(t.data_type for t in model.graph.initializer if t.name == stored)


def input_type(model: onnx.ModelProto, layer: str) -> int | None:
    """The zero-point type of the DequantizeLinear feeding a layer's data input (None: float input)."""
    node = next(n for n in model.graph.node if n.name == layer)
    source = next((n for n in model.graph.node if node.input[0] in n.output), None)
    if source is None or source.op_type != "DequantizeLinear":
        return None
    return next(t.data_type for t in model.graph.initializer if t.name == source.input[2])


def output_type(model: onnx.ModelProto, layer: str) -> int | None:
    """The zero-point type of the QuantizeLinear a layer's output goes to (None: stays float)."""
    node = next(n for n in model.graph.node if n.name == layer)
    quantize = next(
        (n for n in model.graph.node if n.op_type == "QuantizeLinear" and node.output[0] in n.input), None
    )
    if quantize is None:
        return None
    return next(t.data_type for t in model.graph.initializer if t.name == quantize.input[2])


KEPT = {"float": (TensorProto.FLOAT, None), "int16": (TensorProto.INT16, TensorProto.UINT16)}


@pytest.mark.parametrize("mode", ["float", "int16"])
def test_keep_first_last(demo, mode):
    loaded, x = demo
    first, last = boundary_layers(loaded.model)
    assert (first, last) == (["/stem/stem.0/Conv"], ["/classifier/Gemm"])
    middle = "/blocks/blocks.0/pointwise/pointwise.0/Conv"
    recipe = parse_recipe({"version": 1, "defaults": {"quantize": {}}, "ptq": {"keep_first_last": mode}})
    result = run_sync(iter_optimize(loaded, recipe, x))
    # The first layer's weights and pixels, the last layer's weights and logits are kept; the tensors
    # between them and the 8-bit layers next to them take the neighbours' 8 bits.
    assert (weight_type(result.model, first[0]), input_type(result.model, first[0])) == KEPT[mode]
    assert (weight_type(result.model, last[0]), output_type(result.model, last[0])) == KEPT[mode]
    assert (weight_type(result.model, middle), output_type(result.model, middle)) == (
        TensorProto.INT8,
        TensorProto.UINT8,
    )
    assert any("first and last layers" in note for note in result.notes)
    # A layer the recipe sets explicitly keeps its setting.
    explicit = recipe.with_layer(first[0], quantize={"weight_bits": 8})
    result = run_sync(iter_optimize(loaded, explicit, x))
    assert weight_type(result.model, first[0]) == TensorProto.INT8
    assert weight_type(result.model, last[0]) == KEPT[mode][0]
