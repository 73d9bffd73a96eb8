"""Evaluating an optimized model against its original, on the demo model and tiny models built here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from slimscope.core.data import Dataset, load_dataset
from slimscope.core.errors import DatasetError
from slimscope.core.evaluate import (
    EvalReport,
    LatencyComparison,
    LatencyStats,
    RunningMetrics,
    count_nonzero_params,
    evaluate,
    iter_evaluate,
    layer_tensors,
    measure_latency,
)
from slimscope.core.evaluate.quality_warnings import judge
from slimscope.core.loading import load_model

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"


@pytest.fixture(scope="module")
def demo_model() -> onnx.ModelProto:
    return load_model(DEMO / "digits_net.onnx").model


@pytest.fixture(scope="module")
def demo_data() -> Dataset:
    return load_dataset(DEMO / "digits_test.npz")


def copy_of(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def perturbed(model: onnx.ModelProto, name: str, scale: float, seed: int = 0) -> onnx.ModelProto:
    """A copy with noise of `scale` times the weight's spread added to initializer `name`."""
    copy = copy_of(model)
    for index, tensor in enumerate(copy.graph.initializer):
        if tensor.name == name:
            values = numpy_helper.to_array(tensor)
            noise = np.random.default_rng(seed).standard_normal(values.shape) * values.std() * scale
            copy.graph.initializer[index].CopyFrom(
                numpy_helper.from_array((values + noise).astype(values.dtype), name)
            )
    return copy


def tiny_model(
    nodes, initializers, input_shape, output_shape, *, input_name: str = "x", output: str = "y"
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, output_shape)],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def scaler(factor: float, input_shape, output_shape) -> onnx.ModelProto:
    """y = x * factor."""
    weight = numpy_helper.from_array(np.array(factor, np.float32), "factor")
    return tiny_model([helper.make_node("Mul", ["x", "factor"], ["y"])], [weight], input_shape, output_shape)


# --- outputs ---------------------------------------------------------------------------------------


def test_model_against_itself(demo_model, demo_data) -> None:
    report = evaluate(demo_model, demo_model, demo_data, latency=False)
    assert report.samples == 1000
    assert report.accuracy is not None
    assert report.accuracy["original"] == report.accuracy["optimized"] == pytest.approx(0.985, abs=0.005)
    assert report.agreement == 1.0
    assert report.sqnr_db == math.inf
    assert report.cosine == pytest.approx(1.0)
    assert report.size_bytes["original"] == report.size_bytes["optimized"] > 1_000_000
    assert report.gzip_bytes["original"] < report.size_bytes["original"]
    assert report.nonzero_params["original"] == report.nonzero_params["optimized"] > 270_000
    assert report.latency_ms is None and report.layers == () and report.warnings == ()
    as_json = json.loads(json.dumps(report.to_dict(), allow_nan=False))  # strict JSON
    assert as_json["sqnr_db"] == "inf" and as_json["accuracy"]["original"] == report.accuracy["original"]
    expected_keys = {"samples", "accuracy", "agreement", "sqnr_db", "cosine", "latency_ms", "size_bytes"}
    expected_keys |= {"gzip_bytes", "nonzero_params", "macs", "layers", "warnings", "latency", "sqnr_on"}
    assert set(as_json) == expected_keys


def test_perturbed_weights_show_per_layer(demo_model, demo_data) -> None:
    pairs = layer_tensors(demo_model)
    last_conv = [init.name for init in demo_model.graph.initializer if len(init.dims) == 4][-1]
    noisy = perturbed(demo_model, last_conv, scale=1.5)
    macs = {"original": 15_330_752, "optimized": 15_330_752}
    report = evaluate(demo_model, noisy, demo_data, latency=False, per_layer=pairs, macs=macs)
    assert report.agreement is not None and report.agreement < 1.0
    assert report.sqnr_db is not None and math.isfinite(report.sqnr_db)
    assert report.cosine is not None and report.cosine < 1.0
    assert report.macs == macs
    assert [layer.name for layer in report.layers] == [name for name, _ in pairs]
    errors = [layer.sqnr_db for layer in report.layers]
    assert all(value is not None for value in errors)
    assert errors[0] == math.inf  # layers before the perturbed weight compute exactly the same
    assert math.isfinite(errors[-1])


def test_quantized_model_per_layer_uses_dequantized_tensors(demo_model, demo_data, tmp_path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{"input": demo_data.x[i : i + 1]} for i in range(16)])

        def get_next(self):
            return next(self.feeds, None)

    path = tmp_path / "q.onnx"
    quantize_static(  # it edits the model it is given: hand it a copy
        copy_of(demo_model), path, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
    )  # fmt: skip
    quantized = onnx.load(path)
    report = evaluate(demo_model, quantized, demo_data, latency=False, per_layer=layer_tensors(demo_model))
    assert report.agreement is not None and report.agreement > 0.95
    assert report.sqnr_db is not None and 15 < report.sqnr_db < 80
    assert all(layer.sqnr_db is not None and 5 < layer.sqnr_db < 80 for layer in report.layers), report.layers
    # Conv+Relu fused by the quantizer: compared at the Relu output both models still have.
    assert any(
        layer.tensor != tensor
        for layer, (_, tensor) in zip(report.layers, layer_tensors(demo_model), strict=True)
    )
    assert report.size_bytes["optimized"] < report.size_bytes["original"] / 2
    assert report.nonzero_params["optimized"] <= report.nonzero_params["original"]


def test_non_classifier_output_has_no_agreement() -> None:
    original = scaler(1.0, ["N", 4, 4], ["N", 4, 4])
    optimized = scaler(1.1, ["N", 4, 4], ["N", 4, 4])
    x = np.random.default_rng(0).standard_normal((10, 4, 4)).astype(np.float32)
    report = evaluate(original, optimized, Dataset(x, np.zeros(10, np.int64), None, "r"), latency=False)
    assert report.agreement is None and report.accuracy is None
    assert report.sqnr_db == pytest.approx(20.0)  # noise is 0.1 x the signal: 10·log10(1/0.01)
    assert report.cosine == pytest.approx(1.0)


def test_fixed_batch_pads_the_last_batch() -> None:
    fixed = scaler(2.0, [4, 3], [4, 3])
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    data = Dataset(x, np.array([2] * 10), None, "d")
    report = evaluate(fixed, fixed, data, latency=False)
    assert report.samples == 10 and report.accuracy == {"original": 1.0, "optimized": 1.0}
    dynamic = scaler(2.0, ["N", 3], ["N", 3])  # one model fixes the batch, the other does not
    report = evaluate(dynamic, fixed, data, latency=False, per_layer=[("mul", "y")])
    assert report.samples == 10 and report.sqnr_db == math.inf and report.layers[0].sqnr_db == math.inf


def test_labels_beyond_the_classes() -> None:
    model = scaler(1.0, ["N", 3], ["N", 3])
    data = Dataset(np.eye(3, dtype=np.float32), np.array([0, 1, 5]), None, "d")
    with pytest.raises(DatasetError, match="labels up to 5, but the model outputs 3 classes"):
        evaluate(model, model, data, latency=False)


def test_pruned_channels_have_no_layer_error() -> None:
    def conv_pair(channels: int) -> onnx.ModelProto:
        rng = np.random.default_rng(channels)
        weights = [
            numpy_helper.from_array(rng.standard_normal((channels, 1, 3, 3)).astype(np.float32), "w1"),
            numpy_helper.from_array(rng.standard_normal((2, channels, 1, 1)).astype(np.float32), "w2"),
        ]
        nodes = [
            helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
            helper.make_node("Conv", ["c1", "w2"], ["y"], name="conv2"),
        ]
        return tiny_model(nodes, weights, ["N", 1, 5, 5], ["N", 2, 5, 5])

    data = Dataset(np.ones((3, 1, 5, 5), np.float32), None, None, "d")
    pairs = [("conv1", "c1"), ("conv2", "y"), ("gone", "missing")]
    report = evaluate(conv_pair(4), conv_pair(3), data, latency=False, per_layer=pairs)
    conv1, conv2, gone = report.layers
    assert conv1.sqnr_db is None and "shape [3, 3, 5, 5]" in (conv1.note or "")
    assert conv2.sqnr_db is not None and math.isfinite(conv2.sqnr_db)
    assert gone.sqnr_db is None and "not in the original model" in (gone.note or "")
    assert any("could not be measured for 2 layers" in warning for warning in report.warnings)


# --- streaming and cancelling ----------------------------------------------------------------------


def test_partial_results_arrive(demo_model, demo_data) -> None:
    task = iter_evaluate(demo_model, demo_model, demo_data, latency=False)
    partials = []
    while True:
        try:
            progress = next(task)
        except StopIteration as stop:
            report = stop.value
            break
        if isinstance(progress.partial, RunningMetrics):
            partials.append(progress.partial)
    assert isinstance(report, EvalReport)
    with_accuracy = [p for p in partials if p.accuracy is not None]
    assert len(with_accuracy) >= 2
    assert [p.samples for p in partials] == sorted(p.samples for p in partials)
    assert partials[-1].samples == partials[-1].total == 1000 and partials[-1].agreement == 1.0


def test_closing_early_cancels(demo_model, demo_data) -> None:
    task = iter_evaluate(demo_model, demo_model, demo_data, latency=True, per_layer=layer_tensors(demo_model))
    for progress in task:
        if isinstance(progress.partial, RunningMetrics):
            break
    task.close()
    assert task.gi_frame is None  # finished: nothing runs on after the close
    with pytest.raises(StopIteration):
        next(task)


# --- latency and size ------------------------------------------------------------------------------


def test_latency_stats_structure(demo_model, demo_data) -> None:
    stats = measure_latency(
        {"original": demo_model, "optimized": demo_model},
        threads=1,
        runs=12,
        warmup=2,
        sample=demo_data.x[:1],
    )
    assert set(stats) == {"original", "optimized"}
    for value in stats.values():
        assert isinstance(value, LatencyStats)
        assert value.threads == 1 and value.runs == 12
        assert 0 < value.median_ms <= value.p90_ms


def test_report_latency_and_larger_model_warning(demo_model, demo_data) -> None:
    bigger = copy_of(demo_model)
    unused = np.random.default_rng(0).standard_normal(300_000).astype(np.float32)
    bigger.graph.initializer.append(numpy_helper.from_array(unused, "unused_padding"))
    report = evaluate(demo_model, bigger, demo_data, latency=True, max_samples=64)
    assert report.samples == 64 and report.sqnr_db == math.inf
    assert report.size_bytes["optimized"] > report.size_bytes["original"] + 1_000_000
    assert report.nonzero_params["optimized"] > report.nonzero_params["original"]
    assert any("LARGER on disk" in warning for warning in report.warnings), report.warnings
    assert report.latency_ms is not None and report.latency_ms[0].threads == 1
    headline = report.to_dict()["latency_ms"]
    assert set(headline) == {"original", "optimized", "threads", "speedup"} and headline["threads"] == 1
    rows = report.to_dict()["latency"]
    for row in rows:
        assert set(row) == {"threads", "original", "optimized", "speedup"}
        for role in ("original", "optimized"):
            assert set(row[role]) == {"median", "p90", "threads", "runs"}
            assert row[role]["p90"] >= row[role]["median"] > 0 and row[role]["threads"] == row["threads"]


def test_slower_warning_says_so_plainly() -> None:
    fast, slow = LatencyStats(1.0, 1.2, 1, 50), LatencyStats(1.3, 1.5, 1, 50)
    verdict = judge(latency=(LatencyComparison(1, fast, slow),))
    [warning] = verdict.warnings
    assert warning.startswith("The optimized model is 1.30x SLOWER than the original at 1 thread")
    assert "the int8 preset" in warning and "channels-30" in warning and verdict.flagged == {"latency_ms"}
    assert judge(latency=(LatencyComparison(4, fast, fast),)).warnings == ()


def test_unstructured_zeros_warning(demo_model, demo_data) -> None:
    sparse = copy_of(demo_model)
    for index, tensor in enumerate(sparse.graph.initializer):
        values = numpy_helper.to_array(tensor)
        if values.ndim >= 2:
            values = np.where(np.abs(values) < np.median(np.abs(values)), 0, values).astype(values.dtype)
            sparse.graph.initializer[index].CopyFrom(numpy_helper.from_array(values, tensor.name))
    report = evaluate(demo_model, sparse, demo_data, latency=False, max_samples=32)
    assert report.nonzero_params["optimized"] < 0.6 * report.nonzero_params["original"]
    assert report.gzip_bytes["optimized"] < report.gzip_bytes["original"]
    assert any("only the gzip-compressed size shrinks" in warning for warning in report.warnings)


def test_quantized_zeros_count_as_zero() -> None:
    weight = np.array([[3, 3, 0], [5, -1, 5]], np.int8)  # zero points 3 and 5 per output channel
    inits = [
        numpy_helper.from_array(weight, "w_q"),
        numpy_helper.from_array(np.array([0.1, 0.2], np.float32), "w_scale"),
        numpy_helper.from_array(np.array([3, 5], np.int8), "w_zero"),
        numpy_helper.from_array(np.array([2, -1], np.int64), "shape"),  # not a weight
        numpy_helper.from_array(np.array([0.0, 1.5, 0.0], np.float32), "bias"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], axis=0),
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Add", ["m", "bias"], ["a"]),
        helper.make_node("Reshape", ["a", "shape"], ["y"]),
    ]
    model = tiny_model(nodes, inits, [1, 2], [2, -1])
    assert count_nonzero_params(model) == 2 + 1  # w_q: 0 and -1 differ from their zero points; bias: 1.5
