"""Per-layer quantization: what the QDQ graph really holds, that it runs and agrees with float, the
calibration cache, and that nothing is written outside private temporary folders."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationMethod, QuantType

import slimscope.core.quantize.calibration as calibration_module
import slimscope.core.quantize.weight_params as weight_params_module
from slimscope.core.errors import DatasetError, RecipeError
from slimscope.core.layers import find_layers
from slimscope.core.loading import load_model
from slimscope.core.quantize import CalibrationCache, iter_quantize, translate_settings
from slimscope.core.recipe import QuantSpec
from slimscope.core.tasks import run_sync

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"


def quantize(model, settings, data, cache=None):
    return run_sync(iter_quantize(model, settings, data, cache=cache))


def samples(n: int = 16, shape=(3, 8, 8), seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def weight_dq(model: onnx.ModelProto, layer: str) -> tuple[onnx.NodeProto, dict[str, np.ndarray]] | None:
    """The DequantizeLinear feeding `layer`'s weight (input 1) and the model's initializers, or None."""
    nodes = {n.name: n for n in model.graph.node}
    producers = {out: n for n in model.graph.node for out in n.output}
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = producers.get(nodes[layer].input[1])
    if producer is None or producer.op_type != "DequantizeLinear" or producer.input[0] not in inits:
        return None
    return producer, inits


def dequantized(model: onnx.ModelProto, layer: str) -> tuple[np.ndarray, np.ndarray, int | None]:
    """(integer codes, dequantized weight, axis) of a quantized layer's weight."""
    found = weight_dq(model, layer)
    assert found is not None, f"{layer} has no quantized weight"
    dq, inits = found
    codes = inits[dq.input[0]].astype(np.int64)
    scale, zero = inits[dq.input[1]].astype(np.float64), inits[dq.input[2]].astype(np.int64)
    axis = next((a.i for a in dq.attribute if a.name == "axis"), None) if scale.size > 1 else None
    shape = [1] * codes.ndim
    if axis is not None:
        shape[axis] = -1
    return codes, (codes - zero.reshape(shape)) * scale.reshape(shape), axis


def dq_dtype(model: onnx.ModelProto, layer: str) -> int:
    dq, _ = weight_dq(model, layer)
    return next(t.data_type for t in model.graph.initializer if t.name == dq.input[0])


def input_zero_point_type(model: onnx.ModelProto, layer: str) -> int:
    nodes = {n.name: n for n in model.graph.node}
    producer = next(n for n in model.graph.node if nodes[layer].input[0] in n.output)
    assert producer.op_type == "DequantizeLinear"
    return next(t.data_type for t in model.graph.initializer if t.name == producer.input[2])


# ---------------------------------------------------------------------------------------------------
# The demo model: int8 agrees with float.


@pytest.fixture(scope="module")
def demo():
    loaded = load_model(DEMO / "digits_net.onnx")
    data = np.load(DEMO / "digits_test.npz")
    return loaded.model, data["x"], data["y"]


@pytest.fixture(scope="module")
def demo_int8(demo):
    model, x, _ = demo
    cache = CalibrationCache()
    return quantize(model, {}, x[:64], cache), cache


def test_demo_int8_agrees_with_float_and_is_u8s8(demo, demo_int8, run_onnx):
    model, x, _ = demo
    result, _ = demo_int8
    onnx.checker.check_model(result.model)
    images = x[200:400]
    float_top = run_onnx(model, {"input": images})[0].argmax(1)
    int8_top = run_onnx(result.model, {"input": images})[0].argmax(1)
    assert (float_top == int8_top).mean() >= 0.97
    layers = find_layers(model, {})
    assert set(result.forms) == {layer.name for layer in layers}
    for layer in layers:
        assert result.forms[layer.name] == "int8 weights per-channel, uint8 activations (QDQ, U8S8)"
        assert dq_dtype(result.model, layer.name) == TensorProto.INT8
        codes, _, axis = dequantized(result.model, layer.name)
        assert axis == layer.out_axis and codes.min() >= -127
        assert input_zero_point_type(result.model, layer.name) == TensorProto.UINT8
    assert result.effective_weight_bytes == result.stored_weight_bytes
    assert not result.calibration_cached


def test_one_layer_edit_reuses_calibration(demo, demo_int8, monkeypatch):
    model, x, _ = demo
    _, cache = demo_int8
    calls = []
    original = calibration_module.create_calibrator
    monkeypatch.setattr(
        calibration_module, "create_calibrator", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    before = cache.calibrations
    fc = "/classifier/Gemm"
    result = quantize(model, {fc: QuantSpec(weight_bits=3), "/stem/stem.0/Conv": None}, x[:64], cache)
    assert result.calibration_cached and not calls and cache.calibrations == before
    assert result.forms[fc].startswith("simulated 3-bit weights in int8")
    assert result.forms["/stem/stem.0/Conv"] == "float (excluded)"
    assert result.effective_weight_bytes < result.stored_weight_bytes
    # Another calibration method is a new calibration; the data changing is one too.
    quantize(model, {fc: QuantSpec(calibration="percentile")}, x[:64], cache)
    quantize(model, {}, x[64:128], cache)
    assert len(calls) == 2 and cache.calibrations == before + 2


@pytest.mark.parametrize(
    "spec",
    [
        QuantSpec(),
        QuantSpec(granularity="per_tensor"),
        QuantSpec(symmetric=False),
        QuantSpec(weight_bits=16, symmetric=False),
    ],
    ids=["int8", "per_tensor", "asymmetric", "int16"],
)
def test_precomputed_weight_params_are_onnxruntimes(demo, spec, monkeypatch):
    """Weight scales and zero points computed vectorized (weight_params.py) give the very model
    onnxruntime's own per-channel loop gives, and are kept on the cache for the next run."""
    model, x, _ = demo
    settings = {layer.name: spec for layer in find_layers(model, {})}
    cache = CalibrationCache()
    monkeypatch.setattr(weight_params_module, "ENABLED", False)
    by_onnxruntime = quantize(model, settings, x[:32], cache).model.SerializeToString()
    monkeypatch.setattr(weight_params_module, "ENABLED", True)
    precomputed = quantize(model, settings, x[:32], cache).model.SerializeToString()
    assert precomputed == by_onnxruntime
    memo = cache.weight_params(*next(iter(cache._entries)))
    assert len(memo) == len(settings) and all(found is not None for found in memo.values())


# ---------------------------------------------------------------------------------------------------
# Bit widths, exclusion and zeros, on the tiny conv net.


def test_weight_dtypes_per_bit_width(conv_net, run_onnx):
    settings = {"conv": QuantSpec(weight_bits=16), "fc": QuantSpec(weight_bits=4)}
    before = conv_net.model.SerializeToString()
    result = quantize(conv_net.model, settings, samples())
    assert conv_net.model.SerializeToString() == before  # the input model is never edited
    assert dq_dtype(result.model, "conv") == TensorProto.INT16
    assert dq_dtype(result.model, "fc") == TensorProto.INT4
    assert any(e.version >= 21 for e in result.model.opset_import if e.domain in ("", "ai.onnx"))
    assert "runs slower" in result.forms["fc"] and "int4 weights per-channel" in result.forms["fc"]
    assert any("2.5–4x slower" in note for note in result.notes)
    onnx.checker.check_model(result.model)
    x = samples(4, seed=5)
    expected = run_onnx(conv_net.model, {"input": x})[0]
    # int4 on random weights: a step of max/7 per channel, summed over 256 inputs
    assert np.abs(run_onnx(result.model, {"input": x})[0] - expected).max() < 0.25 * np.abs(expected).max()


def test_simulated_bits_stay_in_range(conv_net):
    settings = {"conv": QuantSpec(weight_bits=3), "fc": QuantSpec(weight_bits=3, symmetric=False)}
    result = quantize(conv_net.model, settings, samples())
    codes, _, axis = dequantized(result.model, "conv")
    assert codes.min() >= -3 and codes.max() <= 3 and codes.min() == -3 and axis == 0
    codes, _, _ = dequantized(result.model, "fc")
    assert codes.min() >= -4 and codes.max() <= 3
    assert dq_dtype(result.model, "conv") == TensorProto.INT8
    assert result.forms["conv"].startswith("simulated 3-bit weights in int8 per-channel")
    assert "asymmetric" in result.forms["fc"]
    # 3 bits × (108 + 1280) weights / 8, plus int32 biases (4 + 5); stored: 8 bits each
    assert result.effective_weight_bytes == 41 + 480 + 4 * 9
    assert result.stored_weight_bytes == 108 + 1280 + 4 * 9


def test_simulated_rounding_ties_are_clamped(conv_net):
    """[-1.5, 5.5] in asymmetric 3 bits: scale 1, zero point round(-2.5) = -2, and 5.5 rounds to 6 - 2 = 4,
    one code past the 3-bit range; onnxruntime clips only to int8's, so the result must clamp it."""
    model = onnx.ModelProto()
    model.CopyFrom(conv_net.model)
    weight = np.linspace(-1.5, 5.5, 108, dtype=np.float32).reshape(4, 3, 3, 3)
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(weight, "conv.weight"))
    spec = QuantSpec(weight_bits=3, symmetric=False, granularity="per_tensor")
    result = quantize(model, {"conv": spec}, samples())
    codes, values, _ = dequantized(result.model, "conv")
    assert codes.min() == -4 and codes.max() == 3
    assert np.abs(values - weight).max() <= 1.0 + 1e-6  # within one step (the clamped top), else half


def test_excluded_layer_stays_float(conv_net, run_onnx):
    result = quantize(conv_net.model, {"conv": None}, samples())
    assert weight_dq(result.model, "conv") is None
    assert weight_dq(result.model, "fc") is not None
    assert result.forms["conv"] == "float (excluded)"
    inits = {t.name: numpy_helper.to_array(t) for t in result.model.graph.initializer}
    assert np.array_equal(inits["conv.weight"], conv_net.weights["conv.weight"])
    x = samples(4, seed=7)
    expected = run_onnx(conv_net.model, {"input": x})[0]
    assert np.abs(run_onnx(result.model, {"input": x})[0] - expected).max() < 0.05 * np.abs(expected).max()


def test_nothing_quantized_returns_the_model_unchanged(conv_net):
    result = quantize(conv_net.model, {"conv": None, "fc": None}, samples())
    assert result.model == conv_net.model and result.model is not conv_net.model
    assert set(result.forms.values()) == {"float (excluded)"}


@pytest.mark.parametrize(
    "spec",
    [
        QuantSpec(),
        QuantSpec(symmetric=False),
        QuantSpec(weight_bits=3, symmetric=False),
        QuantSpec(weight_bits=5, granularity="per_tensor", symmetric=False),
        QuantSpec(weight_bits=4, granularity="per_tensor", symmetric=False),
    ],
    ids=[
        "int8",
        "int8-asymmetric",
        "3bit-asymmetric",
        "5bit-per-tensor-asymmetric",
        "int4-per-tensor-asymmetric",
    ],
)
def test_pruned_zeros_dequantize_to_exactly_zero(conv_net, spec):
    model = conv_net.model
    weights = {t.name: numpy_helper.to_array(t).copy() for t in model.graph.initializer}
    for name in ("conv.weight", "fc.weight"):
        flat = weights[name].reshape(-1)
        flat[::3] = 0.0
        flat[1::7] += 0.5  # asymmetric ranges: make zero sit off the middle
    pruned = onnx.ModelProto()
    pruned.CopyFrom(model)
    pruned.graph.ClearField("initializer")
    pruned.graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in weights.items())
    result = quantize(pruned, {"conv": spec, "fc": spec}, samples())
    for layer, name in (("conv", "conv.weight"), ("fc", "fc.weight")):
        _, values, _ = dequantized(result.model, layer)
        zeros = weights[name] == 0
        assert zeros.sum() > 0 and np.all(values[zeros] == 0.0)


def test_16_bit_activations(conv_net):
    result = quantize(conv_net.model, {"conv": QuantSpec(activation_bits=16)}, samples())
    assert input_zero_point_type(result.model, "conv") == TensorProto.UINT16
    assert input_zero_point_type(result.model, "fc") == TensorProto.UINT8
    assert "uint16 activations" in result.forms["conv"] and "slower" in result.forms["conv"]


def test_histogram_methods_and_feeds(conv_net, run_onnx):
    feeds = [{"input": batch} for batch in np.split(samples(12), 3)]
    settings = {"conv": QuantSpec(calibration="percentile"), "fc": QuantSpec(calibration="entropy")}
    result = quantize(conv_net.model, settings, feeds)
    assert run_onnx(result.model, {"input": samples(2)})[0].shape == (2, 5)


# ---------------------------------------------------------------------------------------------------
# The one translation function.


def test_translate_settings(conv_net):
    model = onnx.shape_inference.infer_shapes(conv_net.model)  # overrides name only tensors with a type
    layers = find_layers(model, {})
    settings = {
        "conv": QuantSpec(weight_bits=16, activation_bits=16, calibration="entropy"),
        "fc": QuantSpec(granularity="per_tensor", symmetric=False),
    }
    options = translate_settings(model, layers, settings)
    overrides = options.extra_options["TensorQuantOverrides"]
    assert overrides["conv.weight"] == [{"quant_type": QuantType.QInt16, "symmetric": True, "axis": 0}]
    assert overrides["fc.weight"] == [{"quant_type": QuantType.QInt8, "symmetric": False}]
    # conv's input and output are 16-bit; the output is also fc's input (Relu, Flatten in between)
    assert overrides["input"] == [{"quant_type": QuantType.QUInt16, "symmetric": False}]
    assert overrides["c"] == [{"quant_type": QuantType.QUInt16, "symmetric": False}]
    assert options.activation_type == QuantType.QUInt8 and options.min_opset == 21
    assert options.default_method == CalibrationMethod.MinMax
    assert options.tensor_methods == {"input": CalibrationMethod.Entropy, "c": CalibrationMethod.Entropy}
    assert options.nodes_to_exclude == ()
    excluded = translate_settings(model, layers, {"conv": None, "fc": QuantSpec(weight_bits=5)})
    assert excluded.nodes_to_exclude == ("conv",) and excluded.min_opset == 13
    fc = excluded.extra_options["TensorQuantOverrides"]["fc.weight"]
    assert len(fc) == 5 and fc[0]["axis"] == 0 and {c["zero_point"] for c in fc} == {0}
    assert excluded.simulated == {"fc.weight": (5, True)}
    signed = QuantSpec(activation_symmetric=True)
    s8s8 = translate_settings(model, layers, {"conv": signed, "fc": signed})
    assert s8s8.activation_type == QuantType.QInt8 and s8s8.extra_options["ActivationSymmetric"] is True
    assert set(s8s8.extra_options["TensorQuantOverrides"]) == {"conv.weight", "fc.weight"}


# ---------------------------------------------------------------------------------------------------
# Real-model shapes: dynamic batch, old opsets.


def dynamic_flatten_net() -> onnx.ModelProto:
    """Conv + Relu, then `x.view(x.size(0), -1)` as torch exports it (Shape, Gather, Concat, Reshape)."""
    rng = np.random.default_rng(3)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal((5, 256)).astype(np.float32) * 0.1, "fw"),
        numpy_helper.from_array(np.array(0, np.int64), "zero"),
        numpy_helper.from_array(np.array([0], np.int64), "axes"),
        numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["r", "target"], ["f"]),
        helper.make_node("Gemm", ["f", "fw"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "dynamic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_dynamic_batch_stays_dynamic(run_onnx):
    model = dynamic_flatten_net()
    result = quantize(model, {}, samples(20))
    assert result.model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    for n in (1, 5):
        x = samples(n, seed=9)
        expected = run_onnx(model, {"x": x})[0]
        got = run_onnx(result.model, {"x": x})[0]
        assert got.shape == (n, 5) and np.abs(got - expected).max() < 0.1 * np.abs(expected).max()


def test_free_spatial_dims_stay_free(conv_net, run_onnx):
    """A model that takes any image size still does after quantization (calibrated at one size)."""
    model = onnx.ModelProto()
    model.CopyFrom(conv_net.model)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"
    result = quantize(model, {}, samples())
    shape = result.model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in shape] == ["N", 3, "H", "W"]
    assert any("Kept the free input sizes" in note for note in result.notes)
    assert run_onnx(result.model, {"input": samples(3)})[0].shape == (3, 5)
    assert any(n.op_type == "DequantizeLinear" for n in result.model.graph.node)


def test_fixed_batch_runs_in_batches_of_that_size(conv_net):
    model = onnx.ModelProto()
    model.CopyFrom(conv_net.model)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    messages = []
    result = run_sync(iter_quantize(model, {}, samples(5)), lambda p: messages.append(p.message))
    assert "Calibrating (minmax): run 2 of 2" in messages
    assert any("left out 1 sample that" in note for note in result.notes)


def test_fused_layers_keep_their_names(run_onnx):
    """onnxruntime's pre-processing folds BatchNormalization into Conv and turns MatMul + Add into a
    Gemm named `matmul/MatMulAddFusion`; the results still speak the original layer names."""
    rng = np.random.default_rng(4)
    values = {
        "w": rng.standard_normal((4, 3, 3, 3)),
        "gamma": rng.uniform(0.5, 2, 4),
        "beta": rng.standard_normal(4),
        "mean": rng.standard_normal(4),
        "var": rng.uniform(0.5, 2, 4),
        "mw": rng.standard_normal((256, 5)) * 0.1,
        "mb": rng.standard_normal(5),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["bn"], name="bn"),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("MatMul", ["f", "mw"], ["mm"], name="matmul"),
        helper.make_node("Add", ["mm", "mb"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes,
        "fused",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in values.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    result = quantize(model, {"matmul": QuantSpec(weight_bits=6)}, samples())
    ops = {n.name: n.op_type for n in result.model.graph.node}
    assert ops["conv"] == "Conv" and ops["matmul"] == "Gemm" and "BatchNormalization" not in ops.values()
    assert result.forms["conv"].startswith("int8 weights per-channel")
    assert result.forms["matmul"].startswith("simulated 6-bit weights in int8 per-channel")
    codes, _, axis = dequantized(result.model, "matmul")
    assert codes.min() >= -31 and codes.max() <= 31 and axis == 1
    x = samples(3, seed=11)
    expected = run_onnx(model, {"x": x})[0]
    assert np.abs(run_onnx(result.model, {"x": x})[0] - expected).max() < 0.1 * np.abs(expected).max()


def test_opset_11_model_is_upgraded(conv_net, run_onnx):
    """Old-opset Unsqueeze/Squeeze make the converter insert Constant nodes before the layers."""
    model = onnx.ModelProto()
    model.CopyFrom(conv_net.model)
    model.opset_import[0].version = 11
    model.graph.node[0].input[0] = "squeezed"
    model.graph.node.insert(0, helper.make_node("Squeeze", ["unsqueezed"], ["squeezed"], axes=[0]))
    model.graph.node.insert(0, helper.make_node("Unsqueeze", ["input"], ["unsqueezed"], axes=[0]))
    onnx.checker.check_model(model)
    result = quantize(model, {}, samples())
    onnx.checker.check_model(result.model, full_check=True)
    assert min(e.version for e in result.model.opset_import if e.domain in ("", "ai.onnx")) >= 13
    assert any("opset 11" in note for note in result.notes)
    assert dequantized(result.model, "conv")[2] == 0 and dequantized(result.model, "fc")[2] == 0
    assert (
        result.forms["conv"]
        == result.forms["fc"]
        == "int8 weights per-channel, uint8 activations (QDQ, U8S8)"
    )
    x = samples(2)
    expected = run_onnx(model, {"input": x})[0]
    assert np.abs(run_onnx(result.model, {"input": x})[0] - expected).max() < 0.1 * np.abs(expected).max()


def test_pre_processing_failure_falls_back(conv_net, monkeypatch, run_onnx):
    def fail(*args, **kwargs):
        raise AssertionError  # what symbolic shape inference does on some graphs

    monkeypatch.setattr("slimscope.core.quantize.prepare.quant_pre_process", fail)
    result = quantize(conv_net.model, {}, samples())
    assert any("without onnxruntime's pre-processing" in note for note in result.notes)
    assert weight_dq(result.model, "conv") is not None
    assert run_onnx(result.model, {"input": samples(2)})[0].shape == (2, 5)


# ---------------------------------------------------------------------------------------------------
# Errors, cancellation and files.


def test_bad_input_is_refused(conv_net):
    with pytest.raises(DatasetError, match="takes"):
        quantize(conv_net.model, {}, samples(4, shape=(3, 9, 9)))
    with pytest.raises(DatasetError, match="lacks input 'input'"):
        quantize(conv_net.model, {}, [{"x": samples(1)}])
    with pytest.raises(RecipeError, match="no layer named 'nope'"):
        quantize(conv_net.model, {"nope": QuantSpec()}, samples())


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """Every temporary folder (ours and onnxruntime's) goes here during the test."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_closing_mid_calibration_leaves_no_files(conv_net, private_tmp):
    task = iter_quantize(conv_net.model, {}, samples(64))
    for progress in task:
        if progress.message.startswith("Calibrating") and "run 2 " in progress.message:
            break
    assert os.listdir(private_tmp)  # the calibrator's files exist while it runs
    task.close()
    assert os.listdir(private_tmp) == []


def test_writes_only_into_private_temporary_folders(demo, model_dir, private_tmp, folder_untouched, audit):
    _, x, _ = demo
    shutil.copy(DEMO / "digits_net.onnx", model_dir / "digits_net.onnx")
    loaded = load_model(model_dir / "digits_net.onnx")
    with folder_untouched(model_dir), audit() as log:
        quantize(loaded.model, {"/classifier/Gemm": QuantSpec(weight_bits=4)}, x[:16])
    written = [
        os.path.realpath(os.fsdecode(args[0]))
        for event, args in log.events
        if event == "open" and isinstance(args[0], str | bytes | os.PathLike) and _writes(args)
    ]
    assert written and all(path.startswith(str(private_tmp.resolve())) for path in written)
    assert os.listdir(private_tmp) == []


def _writes(args: tuple) -> bool:
    mode, flags = (args + (None, 0))[1:3]
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    return bool((flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
