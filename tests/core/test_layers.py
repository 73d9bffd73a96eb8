"""The layer view: which nodes are layers, their channels, parameters, MACs, names and weight layouts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from slimscope.core.inspection import iter_inspect
from slimscope.core.layers import Layer, find_layers, layer_weights, weight_blocks
from slimscope.core.loading import load_model
from slimscope.core.shapes import infer_shapes
from slimscope.core.tasks import run_sync

OPSET = 17
IR_VERSION = 8


# ---------------------------------------------------------------- model building


def make_model(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, list],
    weights: dict[str, np.ndarray],
    outputs: list[str],
    *,
    elem_type: int = TensorProto.FLOAT,
    output_type: int | None = None,
    opset: int = OPSET,
) -> onnx.ModelProto:
    """A checked model: `inputs` maps name → shape (ints or symbolic strings), outputs have no shape."""
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info(name, elem_type, shape) for name, shape in inputs.items()],
        [helper.make_tensor_value_info(name, output_type or elem_type, None) for name in outputs],
        initializer=[numpy_helper.from_array(np.asarray(v), name) for name, v in weights.items()],
    )
    ir_version = IR_VERSION if opset <= OPSET else 10
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)
    # Validates the hand-built graph (the checker would insist on output shapes, which the layer view
    # must be able to infer on its own).
    onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    return model


def layers_of(model: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]] | None = None) -> list[Layer]:
    return find_layers(model, infer_shapes(model, input_shapes or {}))


def only_layer(model: onnx.ModelProto) -> Layer:
    layers = layers_of(model)
    assert len(layers) == 1, [layer.name for layer in layers]
    return layers[0]


def inits_of(model: onnx.ModelProto) -> dict[str, TensorProto]:
    return {t.name: t for t in model.graph.initializer}


def rand(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, path)
    return path


def conv_model(x_shape, w_shape, *, group=1, bias=True, name="conv", **attrs) -> onnx.ModelProto:
    weights = {"W": rand(*w_shape)}
    inputs = ["x", "W"]
    if bias:
        weights["B"] = rand(w_shape[0], seed=1)
        inputs.append("B")
    node = helper.make_node("Conv", inputs, ["y"], name=name, group=group, **attrs)
    return make_model([node], {"x": x_shape}, weights, ["y"])


def conv_transpose_model(x_shape, w_shape, *, group=1, values=None) -> onnx.ModelProto:
    cout = w_shape[1] * group
    weights = {"W": rand(*w_shape) if values is None else values, "B": rand(cout, seed=1)}
    node = helper.make_node(
        "ConvTranspose", ["x", "W", "B"], ["y"], name="deconv", group=group, strides=[2, 2]
    )
    return make_model([node], {"x": x_shape}, weights, ["y"])


# ---------------------------------------------------------------- convolutions


def test_conv_params_channels_bias_and_macs():
    model = conv_model([2, 3, 8, 8], (5, 3, 3, 3), strides=[2, 2], pads=[1, 1, 1, 1])
    layer = only_layer(model)
    assert (layer.name, layer.op_type, layer.weight, layer.bias) == ("conv", "Conv", "W", "B")
    assert layer.weight_shape == (5, 3, 3, 3)
    assert layer.out_channels == 5 and layer.out_axis == 0 and layer.groups == 1
    assert not layer.depthwise and not layer.quantized
    assert layer.params == 5 * 3 * 3 * 3 + 5
    assert layer.output_shape == (2, 5, 4, 4)
    assert layer.macs == 2 * 5 * 4 * 4 * 3 * 3 * 3  # N·Cout·Hout·Wout·Cin/g·kh·kw


def test_conv_without_bias_counts_only_the_weight():
    layer = only_layer(conv_model([1, 3, 5, 5], (4, 3, 1, 1), bias=False))
    assert layer.bias is None
    assert layer.params == 12
    assert layer.macs == 1 * 4 * 5 * 5 * 3


def test_depthwise_conv():
    model = conv_model([1, 4, 8, 8], (4, 1, 3, 3), group=4, pads=[1, 1, 1, 1])
    layer = only_layer(model)
    assert layer.groups == 4 and layer.out_channels == 4
    assert layer.depthwise
    assert layer.params == 4 * 9 + 4
    assert layer.macs == 1 * 4 * 8 * 8 * 1 * 3 * 3


def test_grouped_conv_is_not_depthwise():
    model = conv_model([1, 4, 6, 6], (6, 2, 3, 3), group=2)
    layer = only_layer(model)
    assert layer.groups == 2 and layer.out_channels == 6
    assert not layer.depthwise
    assert layer.output_shape == (1, 6, 4, 4)
    assert layer.macs == 1 * 6 * 4 * 4 * (4 // 2) * 3 * 3


def test_conv_weight_blocks_are_input_channel_kernels():
    model = conv_model([1, 3, 5, 5], (4, 3, 2, 2))
    layer = only_layer(model)
    values = layer_weights(model, layer, inits_of(model))
    blocks = weight_blocks(values, layer)
    assert blocks.shape == (4, 3, 4)
    np.testing.assert_array_equal(blocks[2, 1], values[2, 1].reshape(-1))


@pytest.mark.parametrize("group", [1, 2])
def test_conv_transpose_channels_params_and_blocks(group):
    cin, cout_per_group = 4, 3
    values = rand(cin, cout_per_group, 3, 3)
    model = conv_transpose_model([1, cin, 4, 4], values.shape, group=group, values=values)
    layer = only_layer(model)
    cout = cout_per_group * group
    assert layer.op_type == "ConvTranspose" and layer.groups == group
    assert layer.out_channels == cout and layer.out_axis == 1
    assert layer.bias == "B"
    assert layer.params == values.size + cout
    assert layer.output_shape == (1, cout, 9, 9)

    blocks = weight_blocks(layer_weights(model, layer, inits_of(model)), layer)
    cin_per_group = cin // group
    assert blocks.shape == (cout, cin_per_group, 9)
    # Weight [ci, co_local, kh, kw] of group g = ci // (Cin/g) feeds output channel g·(Cout/g) + co_local.
    for ci in range(cin):
        g, ci_local = divmod(ci, cin_per_group)
        for co_local in range(cout_per_group):
            np.testing.assert_array_equal(
                blocks[g * cout_per_group + co_local, ci_local], values[ci, co_local].reshape(-1)
            )


def test_conv_transpose_grouped_specific_element():
    values = np.zeros((4, 3, 3, 3), np.float32)
    values[3, 1, 2, 0] = 7.0  # input channel 3 → group 1 (local input 1); local output 1 → channel 4
    model = conv_transpose_model([1, 4, 4, 4], values.shape, group=2, values=values)
    layer = only_layer(model)
    blocks = weight_blocks(layer_weights(model, layer, inits_of(model)), layer)
    assert blocks[4, 1, 2 * 3 + 0] == 7.0
    assert np.count_nonzero(blocks) == 1


@pytest.mark.parametrize("group", [1, 2])
def test_conv_transpose_macs(group):
    cin, cout_per_group = 4, 3
    model = conv_transpose_model([1, cin, 4, 4], (cin, cout_per_group, 3, 3), group=group)
    layer = only_layer(model)
    assert layer.macs == 1 * cin * 4 * 4 * cout_per_group * 3 * 3


# ---------------------------------------------------------------- Gemm and MatMul


@pytest.mark.parametrize("trans_b", [1, 0])
def test_gemm_out_channels_follow_trans_b(trans_b):
    weight = rand(4, 8) if trans_b else rand(8, 4)
    node = helper.make_node("Gemm", ["x", "W", "C"], ["y"], name="fc", transB=trans_b)
    model = make_model([node], {"x": [2, 8]}, {"W": weight, "C": rand(4, seed=2)}, ["y"])
    layer = only_layer(model)
    assert layer.out_channels == 4
    assert layer.out_axis == (0 if trans_b else 1)
    assert layer.bias == "C"
    assert layer.params == 32 + 4
    assert layer.output_shape == (2, 4)
    assert layer.macs == 2 * 4 * 8
    blocks = weight_blocks(layer_weights(model, layer, inits_of(model)), layer)
    assert blocks.shape == (4, 8, 1)
    as_out_in = weight if trans_b else weight.T
    np.testing.assert_array_equal(blocks[:, :, 0], as_out_in)


@pytest.mark.parametrize("bias_first", [False, True])
def test_matmul_with_constant_b_and_add_bias(bias_first):
    weight = rand(8, 4)
    add_inputs = ["b", "mm"] if bias_first else ["mm", "b"]
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["mm"], name="linear"),
        helper.make_node("Add", add_inputs, ["y"], name="linear_bias"),
    ]
    model = make_model(nodes, {"x": [2, 3, 8]}, {"W": weight, "b": rand(4, seed=3)}, ["y"])
    layer = only_layer(model)
    assert (layer.name, layer.op_type, layer.weight, layer.bias) == ("linear", "MatMul", "W", "b")
    assert layer.out_channels == 4 and layer.out_axis == 1
    assert layer.params == 8 * 4 + 4
    assert layer.output_shape == (2, 3, 4)
    assert layer.macs == 2 * 3 * 4 * 8
    blocks = weight_blocks(layer_weights(model, layer, inits_of(model)), layer)
    np.testing.assert_array_equal(blocks[:, :, 0], weight.T)


def test_matmul_without_add_has_no_bias():
    node = helper.make_node("MatMul", ["x", "W"], ["y"], name="linear")
    layer = only_layer(make_model([node], {"x": [3, 8]}, {"W": rand(8, 4)}, ["y"]))
    assert layer.bias is None and layer.params == 32


def test_matmul_with_constant_a():
    weight = rand(4, 8)
    node = helper.make_node("MatMul", ["A", "x"], ["y"], name="left")
    model = make_model([node], {"x": [8, 3]}, {"A": weight}, ["y"])
    layer = only_layer(model)
    assert layer.weight == "A"
    assert layer.out_channels == 4 and layer.out_axis == 0
    assert layer.output_shape == (4, 3)
    assert layer.macs == 4 * 3 * 8
    blocks = weight_blocks(layer_weights(model, layer, inits_of(model)), layer)
    np.testing.assert_array_equal(blocks[:, :, 0], weight)


def test_matmul_with_constant_a_plus_column_vector_has_no_bias():
    nodes = [
        helper.make_node("MatMul", ["A", "x"], ["mm"], name="left"),
        helper.make_node("Add", ["mm", "c"], ["y"]),
    ]
    model = make_model(nodes, {"x": [8, 3]}, {"A": rand(4, 8), "c": rand(3, seed=4)}, ["y"])
    layer = only_layer(model)
    assert layer.out_channels == 4
    assert layer.bias is None  # c has 3 entries, one per column, not one per output channel
    assert layer.params == 32


def test_matmul_between_two_activations_is_not_a_layer():
    nodes = [helper.make_node("MatMul", ["x", "z"], ["y"], name="attention")]
    model = make_model(nodes, {"x": [3, 8], "z": [8, 4]}, {}, ["y"])
    assert layers_of(model) == []


def test_nodes_without_weights_are_not_layers():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Conv", ["r", "W"], ["y"], name="conv"),
    ]
    model = make_model(nodes, {"x": [1, 2, 4, 4]}, {"W": rand(3, 2, 1, 1)}, ["y"])
    layers = layers_of(model)
    assert [(layer.name, layer.node_index) for layer in layers] == [("conv", 1)]


# ---------------------------------------------------------------- quantized weights


def quantized_model(q, scale, zero, op, axis=None, x_shape=None):
    dq_attrs = {} if axis is None else {"axis": axis}
    nodes = [
        helper.make_node("DequantizeLinear", ["Wq", "s", "z"], ["W"], name="dq", **dq_attrs),
        helper.make_node(op, ["x", "W"], ["y"], name="layer"),
    ]
    return make_model(nodes, {"x": x_shape}, {"Wq": q, "s": scale, "z": zero}, ["y"])


def test_dequantized_weight_per_tensor():
    q = np.arange(-16, 16, dtype=np.int8).reshape(8, 4)
    model = quantized_model(q, np.float32(0.05), np.int8(3), "MatMul", x_shape=[2, 8])
    layer = only_layer(model)
    assert layer.quantized and layer.weight == "Wq"
    assert layer.out_channels == 4 and layer.params == 32
    values = layer_weights(model, layer, inits_of(model))
    assert values.dtype == np.float32
    np.testing.assert_allclose(values, (q.astype(np.float32) - 3) * np.float32(0.05), rtol=1e-6)


def test_dequantized_conv_weight_per_output_channel():
    rng = np.random.default_rng(5)
    q = rng.integers(-128, 128, size=(4, 3, 3, 3)).astype(np.int8)
    scale = np.array([0.1, 0.2, 0.5, 1.0], np.float32)
    zero = np.array([0, 1, -2, 5], np.int8)
    model = quantized_model(q, scale, zero, "Conv", axis=0, x_shape=[1, 3, 5, 5])
    layer = only_layer(model)
    assert layer.quantized and layer.out_channels == 4
    assert layer.macs == 4 * 3 * 3 * 27
    values = layer_weights(model, layer, inits_of(model))
    expected = (q.astype(np.float32) - zero[:, None, None, None]) * scale[:, None, None, None]
    np.testing.assert_allclose(values, expected, rtol=1e-6)


@pytest.mark.parametrize("axis", [None, 1, -1])  # None: the ONNX default axis, 1
def test_dequantized_matmul_weight_per_column(axis):
    q = np.arange(-16, 16, dtype=np.int8).reshape(8, 4)
    scale = np.array([0.5, 1.0, 2.0, 4.0], np.float32)
    zero = np.array([1, 0, -1, 2], np.int8)
    model = quantized_model(q, scale, zero, "MatMul", axis=axis, x_shape=[2, 8])
    layer = only_layer(model)
    values = layer_weights(model, layer, inits_of(model))
    np.testing.assert_allclose(values, (q.astype(np.float32) - zero) * scale, rtol=1e-6)


def test_inspection_measures_the_dequantized_weight(tmp_path):
    q = np.array([[-10, 0], [20, 3]], np.int8)
    model = quantized_model(q, np.float32(0.5), np.int8(0), "MatMul", x_shape=[1, 2])
    report = run_sync(iter_inspect(load_model(save(model, tmp_path / "q.onnx"))))
    [layer] = report.layers
    assert layer.quantized
    stats = report.stats[layer.name]
    assert (stats.min, stats.max, stats.zeros) == (-5.0, 10.0, 1)


def test_qdq_conv_with_an_int32_bias():
    rng = np.random.default_rng(6)
    q = rng.integers(-128, 128, size=(4, 3, 3, 3)).astype(np.int8)
    scale = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    nodes = [
        helper.make_node("DequantizeLinear", ["Wq", "s", "z"], ["W"], axis=0),
        helper.make_node("DequantizeLinear", ["Bq", "bs"], ["B"], axis=0),
        helper.make_node("Conv", ["x", "W", "B"], ["y"], name="qconv"),
    ]
    weights = {
        "Wq": q,
        "s": scale,
        "z": np.zeros(4, np.int8),
        "Bq": np.array([100, -200, 300, 0], np.int32),
        "bs": scale * np.float32(0.01),
    }
    model = make_model(nodes, {"x": [1, 3, 5, 5]}, weights, ["y"])
    layer = only_layer(model)
    assert layer.quantized and layer.weight == "Wq" and layer.bias == "Bq"
    assert layer.params == 108 + 4
    assert layer.macs == 4 * 3 * 3 * 27
    values = layer_weights(model, layer, inits_of(model))
    np.testing.assert_allclose(values, q.astype(np.float32) * scale[:, None, None, None], rtol=1e-6)


def test_qlinearconv_weight_is_dequantized_per_output_channel():
    rng = np.random.default_rng(7)
    q = rng.integers(-128, 128, size=(4, 3, 3, 3)).astype(np.int8)
    scale = np.array([0.5, 0.25, 0.125, 1.0], np.float32)
    zero = np.array([0, 2, -3, 1], np.int8)
    node = helper.make_node(
        "QLinearConv",
        ["x", "xs", "xz", "Wq", "ws", "wz", "ys", "yz", "B"],
        ["y"],
        name="qlinear",
        pads=[1, 1, 1, 1],
    )
    weights = {
        "xs": np.float32(0.1),
        "xz": np.uint8(128),
        "Wq": q,
        "ws": scale,
        "wz": zero,
        "ys": np.float32(0.2),
        "yz": np.uint8(128),
        "B": np.arange(4, dtype=np.int32),
    }
    model = make_model([node], {"x": [1, 3, 5, 5]}, weights, ["y"], elem_type=TensorProto.UINT8)
    layer = only_layer(model)
    assert layer.op_type == "QLinearConv" and layer.kind == "Conv"
    assert layer.quantized and layer.weight == "Wq" and layer.bias == "B"
    assert layer.out_channels == 4 and layer.params == 108 + 4
    assert layer.macs == 4 * 5 * 5 * 27
    values = layer_weights(model, layer, inits_of(model))
    expected = (q.astype(np.float32) - zero[:, None, None, None]) * scale[:, None, None, None]
    np.testing.assert_allclose(values, expected, rtol=1e-6)


def test_matmul_integer_weight_is_its_integers_minus_the_zero_point():
    q = np.arange(32, dtype=np.uint8).reshape(8, 4)
    zero = np.array([1, 2, 3, 4], np.uint8)
    node = helper.make_node("MatMulInteger", ["x", "Wq", "", "wz"], ["y"], name="mmi")
    model = make_model(
        [node],
        {"x": [2, 8]},
        {"Wq": q, "wz": zero},
        ["y"],
        elem_type=TensorProto.UINT8,
        output_type=TensorProto.INT32,
    )
    layer = only_layer(model)
    assert layer.kind == "MatMul" and layer.quantized and layer.out_channels == 4
    assert layer.macs == 2 * 4 * 8
    values = layer_weights(model, layer, inits_of(model))
    np.testing.assert_array_equal(values, q.astype(np.float32) - zero)


def test_blockwise_dequantized_weight():
    k, n, block = 8, 4, 4
    q = np.random.default_rng(8).integers(-8, 8, size=(k, n)).astype(np.int8)
    scale = np.array([[0.5, 1, 2, 4], [0.25, 0.5, 1, 2]], np.float32)  # one row per block of 4 rows
    nodes = [
        helper.make_node("DequantizeLinear", ["Wq", "s"], ["W"], axis=0, block_size=block),
        helper.make_node("MatMul", ["x", "W"], ["y"], name="mm"),
    ]
    model = make_model(nodes, {"x": [1, k]}, {"Wq": q, "s": scale}, ["y"], opset=21)
    layer = only_layer(model)
    assert layer.quantized and layer.out_channels == n
    values = layer_weights(model, layer, inits_of(model))
    np.testing.assert_allclose(values, q * np.repeat(scale, block, axis=0), rtol=1e-6)


# ---------------------------------------------------------------- shapes and MACs through loading


def test_dynamic_batch_counts_macs_for_batch_one(tmp_path):
    model = conv_model(["N", 3, 8, 8], (5, 3, 3, 3), pads=[1, 1, 1, 1])
    loaded = load_model(save(model, tmp_path / "dyn.onnx"))
    assert loaded.input_shapes == {"x": ("N", 3, 8, 8)}
    report = run_sync(iter_inspect(loaded))
    assert report.shape_used == {"x": (1, 3, 8, 8)}
    [layer] = report.layers
    assert layer.output_shape == (1, 5, 8, 8)
    assert layer.macs == 1 * 5 * 8 * 8 * 3 * 3 * 3
    assert report.macs == layer.macs


def test_dynamic_spatial_dims_leave_macs_unknown(tmp_path):
    model = conv_model([1, 3, "H", "W"], (5, 3, 3, 3))
    path = save(model, tmp_path / "hw.onnx")
    report = run_sync(iter_inspect(load_model(path)))
    [layer] = report.layers
    assert layer.macs is None and report.macs is None
    assert layer.params == 140  # everything else is still known

    report = run_sync(iter_inspect(load_model(path, input_shapes=[(1, 3, 10, 12)])))
    assert report.layers[0].macs == 1 * 5 * 8 * 10 * 27
    assert report.macs == report.layers[0].macs


def test_model_totals_sum_layers(tmp_path):
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["h"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["h", "W2"], ["y"], name="c2"),
    ]
    weights = {"W1": rand(4, 3, 3, 3), "B1": rand(4), "W2": rand(2, 4, 1, 1)}
    model = make_model(nodes, {"x": [1, 3, 6, 6]}, weights, ["y"])
    report = run_sync(iter_inspect(load_model(save(model, tmp_path / "two.onnx"))))
    assert [layer.macs for layer in report.layers] == [4 * 36 * 27, 2 * 36 * 4]
    assert report.macs == 4 * 36 * 27 + 2 * 36 * 4
    assert report.params == 108 + 4 + 8
    assert report.weight_bytes == (108 + 4 + 8) * 4


# ---------------------------------------------------------------- names


def test_unnamed_nodes_get_unique_names():
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["h"]),
        helper.make_node("Conv", ["h", "W2"], ["y"]),
    ]
    weights = {"W1": rand(2, 2, 1, 1), "W2": rand(2, 2, 1, 1, seed=1)}
    layers = layers_of(make_model(nodes, {"x": [1, 2, 3, 3]}, weights, ["y"]))
    names = [layer.name for layer in layers]
    assert len(names) == 2 and all(names)
    assert len(set(names)) == 2


def test_duplicate_node_names_get_distinct_layer_names():
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["h"], name="block"),
        helper.make_node("Conv", ["h", "W2"], ["block#2"], name="block"),
        helper.make_node("Conv", ["block#2", "W3"], ["y"]),  # unnamed: falls back to its output "y"
        helper.make_node("Conv", ["y", "W4"], ["z"], name="y"),
    ]
    weights = {f"W{i}": rand(2, 2, 1, 1, seed=i) for i in range(1, 5)}
    layers = layers_of(make_model(nodes, {"x": [1, 2, 3, 3]}, weights, ["z"]))
    names = [layer.name for layer in layers]
    assert len(names) == 4 and all(names)
    assert len(set(names)) == 4, names
    assert names[0] == "block"
    assert [layer.weight for layer in layers] == ["W1", "W2", "W3", "W4"]


def test_layer_names_survive_loading(tmp_path):
    nodes = [
        helper.make_node("Conv", ["x", "W1"], ["h"], name="same"),
        helper.make_node("Conv", ["h", "W2"], ["y"], name="same"),
    ]
    weights = {"W1": rand(2, 2, 1, 1), "W2": rand(2, 2, 1, 1, seed=1)}
    model = make_model(nodes, {"x": [1, 2, 3, 3]}, weights, ["y"])
    report = run_sync(iter_inspect(load_model(save(model, tmp_path / "dup.onnx"))))
    names = [layer.name for layer in report.layers]
    assert len(set(names)) == 2
    assert set(report.stats) == set(names)  # statistics are keyed by the unique names
    assert math.isclose(report.stats[names[0]].mean, float(weights["W1"].mean()), rel_tol=1e-6)
    assert math.isclose(report.stats[names[1]].mean, float(weights["W2"].mean()), rel_tol=1e-6)
