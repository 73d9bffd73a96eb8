"""`iter_optimize` on the demo model: pruning + int8 that really runs and agrees with float, zeros that
survive quantization, channel and N:M pruning, errors, the calibration cache, the source file left
alone, and cancelling that leaves no temporary folders."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from slimscope.core.errors import DatasetError, RecipeError
from slimscope.core.layers import find_layers
from slimscope.core.loading import load_model
from slimscope.core.optimize import OptimizeCache, iter_optimize
from slimscope.core.recipe import default_recipe, parse_recipe
from slimscope.core.recipe_presets import preset_recipe
from slimscope.core.tasks import run_sync
from slimscope.resources import DEMO_CALIBRATION, DEMO_DATA, DEMO_MODEL

FLOAT_LAYER = "/blocks/blocks.3/pointwise/pointwise.0/Conv"  # `"quantize": null` in the int8 recipe
CLASSIFIER = "/classifier/Gemm"
EXPAND = "/expand/expand.0/Conv"
STEM = "/stem/stem.0/Conv"
CALIBRATION_SAMPLES = 64


def optimize(loaded, recipe, calibration=None, cache=None):
    return run_sync(iter_optimize(loaded, recipe, calibration, cache=cache))


def weights_by_layer(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Float weights of a model's layers (for an unquantized model), by layer name."""
    inits = {t.name: t for t in model.graph.initializer}
    return {layer.name: numpy_helper.to_array(inits[layer.weight]) for layer in find_layers(model, {})}


def node_named(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(node for node in model.graph.node if node.name == name)


def producer_of(model: onnx.ModelProto, tensor: str) -> onnx.NodeProto | None:
    return next((node for node in model.graph.node if tensor in node.output), None)


def initializer(model: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


def dq_axis(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)  # DequantizeLinear's default is 1


def top1(run_onnx, model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return run_onnx(model, {"input": x})[0].argmax(axis=1)


# ---------------------------------------------------------------------------------------------------
# Shared results: the demo, int8 + 50 % global pruning (one layer left float), the same pruning alone.


@pytest.fixture(scope="module")
def demo():
    loaded = load_model(DEMO_MODEL)
    with np.load(DEMO_DATA) as test, np.load(DEMO_CALIBRATION) as calib:
        return loaded, test["x"][:500], test["y"][:500], calib["x"][:CALIBRATION_SAMPLES]


@pytest.fixture(scope="module")
def int8_recipe():
    recipe = preset_recipe("sparse-50").with_layer(FLOAT_LAYER, quantize=None)
    assert recipe.defaults.prune.scope == "global" and recipe.defaults.prune.sparsity == 0.5
    assert recipe.defaults.quantize.weight_bits == 8
    return recipe


@pytest.fixture(scope="module")
def int8_run(demo, int8_recipe):
    loaded, _, _, calib = demo
    cache = OptimizeCache()
    return optimize(loaded, int8_recipe, calib, cache), cache


@pytest.fixture(scope="module")
def pruned_only(demo, int8_recipe):
    """The same pruning with quantization off: the float weights quantization starts from."""
    loaded, _, _, _ = demo
    return optimize(loaded, int8_recipe.with_defaults(quantize=None))


def test_int8_and_pruning_runs_and_agrees_with_the_original(demo, int8_run, run_onnx):
    loaded, x, y, _ = demo
    result, _ = int8_run
    onnx.checker.check_model(result.model)
    original, optimized = top1(run_onnx, loaded.model, x), top1(run_onnx, result.model, x)
    assert len(x) == 500
    assert (original == optimized).mean() >= 0.97
    assert abs((optimized == y).mean() - (original == y).mean()) <= 0.015
    assert not result.calibration_cached  # a first run calibrates


def test_pruning_leaves_exact_zeros_in_the_float_weights(demo, pruned_only):
    loaded, _, _, _ = demo
    before, after = weights_by_layer(loaded.model), weights_by_layer(pruned_only.model)
    assert set(after) == set(before) and set(pruned_only.sparsity) == set(before)
    zeros = sum(int(np.count_nonzero(w == 0)) for w in after.values())
    total = sum(w.size for w in after.values())
    # Global ranking: one threshold for all layers, so the 50 % is met by the layers together (the
    # stem keeps nearly all its few weights, the wide 1x1 convs lose most).
    assert zeros / total >= 0.40
    assert pruned_only.sparsity[EXPAND] >= 0.40 and (after[EXPAND] == 0).mean() >= 0.40
    for name, weight in after.items():
        assert pruned_only.sparsity[name] == pytest.approx((weight == 0).mean())
        # Pruning only zeroes: every weight kept is the original value, bit for bit.
        np.testing.assert_array_equal(weight, np.where(weight == 0, 0, before[name]))
        assert pruned_only.forms[name].startswith(f"{(weight == 0).mean():.0%} zero (unstructured); float")


def test_pruned_zeros_survive_int8_quantization(demo, int8_run, pruned_only):
    loaded, _, _, _ = demo
    result, _ = int8_run
    masks = {name: weight == 0 for name, weight in weights_by_layer(pruned_only.model).items()}
    for layer in find_layers(loaded.model, {}):
        if layer.name == FLOAT_LAYER:
            continue
        dq = producer_of(result.model, node_named(result.model, layer.name).input[1])
        assert dq is not None and dq.op_type == "DequantizeLinear", layer.name
        codes = numpy_helper.to_array(initializer(result.model, dq.input[0])).astype(np.int64)
        zero_point = numpy_helper.to_array(initializer(result.model, dq.input[2])).astype(np.int64)
        shape = [1] * codes.ndim
        shape[dq_axis(dq)] = -1
        expected_zero = np.broadcast_to(zero_point.reshape(shape), codes.shape)
        mask = masks[layer.name]
        assert mask.shape == codes.shape
        np.testing.assert_array_equal(codes[mask], expected_zero[mask], err_msg=layer.name)


def test_quantized_layers_are_int8_per_channel_with_uint8_activations(demo, int8_run):
    loaded, _, _, _ = demo
    result, _ = int8_run
    quantized = [layer for layer in find_layers(loaded.model, {}) if layer.name != FLOAT_LAYER]
    assert {layer.op_type for layer in quantized} == {"Conv", "Gemm"}
    for layer in quantized:
        node = node_named(result.model, layer.name)
        dq = producer_of(result.model, node.input[1])
        assert dq is not None and dq.op_type == "DequantizeLinear", layer.name
        assert initializer(result.model, dq.input[0]).data_type == TensorProto.INT8
        assert initializer(result.model, dq.input[2]).data_type == TensorProto.INT8
        scale = numpy_helper.to_array(initializer(result.model, dq.input[1]))
        assert scale.shape == (layer.out_channels,), layer.name  # one scale per output channel
        assert dq_axis(dq) == 0, layer.name  # Conv weights are [out, in, kh, kw]; Gemm's are [out, in]
        activation = producer_of(result.model, node.input[0])
        assert activation is not None and activation.op_type == "DequantizeLinear", layer.name
        assert initializer(result.model, activation.input[2]).data_type == TensorProto.UINT8
        assert "int8 weights per-channel, uint8 activations" in result.forms[layer.name]


def test_a_layer_set_to_quantize_null_stays_float(int8_run, pruned_only):
    result, _ = int8_run
    node = node_named(result.model, FLOAT_LAYER)
    assert node.op_type == "Conv"
    assert producer_of(result.model, node.input[1]) is None  # no DequantizeLinear feeds its weight
    weight = initializer(result.model, node.input[1])
    assert weight.data_type == TensorProto.FLOAT
    np.testing.assert_array_equal(
        numpy_helper.to_array(weight), weights_by_layer(pruned_only.model)[FLOAT_LAYER]
    )
    assert result.forms[FLOAT_LAYER].endswith("float (excluded)")


# ---------------------------------------------------------------------------------------------------
# Channel pruning and N:M.


CHANNEL_RECIPE = {
    "version": 1,
    "defaults": {"prune": {"structure": "channel", "sparsity": 0.5}, "quantize": None},
}


@pytest.fixture(scope="module")
def channel_pruned(demo):
    loaded, _, _, _ = demo
    return optimize(loaded, parse_recipe(CHANNEL_RECIPE))


def test_channel_pruning_shrinks_layers_and_names_what_it_dragged(demo, channel_pruned, run_onnx):
    loaded, x, _, _ = demo
    result = channel_pruned
    before = {layer.name: layer.weight_shape for layer in find_layers(loaded.model, {})}
    after = {layer.name: layer.weight_shape for layer in find_layers(result.model, {})}
    assert set(after) == set(before)
    for name, shape in before.items():
        if name == CLASSIFIER:
            assert after[name] == (10, 256)  # its 10 outputs stay; its inputs follow the expand conv
        else:
            assert after[name][0] == shape[0] // 2, name
            assert after[name][1:] == (1, 3, 3) or after[name][1] == shape[1] // 2, name
    # Residual blocks couple the stem with block 0; the classifier reads the expand conv's channels.
    assert {
        "/blocks/blocks.0/depthwise/depthwise.0/Conv",
        "/blocks/blocks.0/pointwise/pointwise.0/Conv",
    } <= set(result.dragged[STEM])
    assert CLASSIFIER in result.dragged[EXPAND]
    assert any(CLASSIFIER in note and "kept" in note for note in result.notes), result.notes
    logits = run_onnx(result.model, {"input": x[:32]})[0]
    assert logits.shape == (32, 10) and np.isfinite(logits).all()


def test_channel_forms_do_not_claim_channels_a_layer_kept(channel_pruned):
    assert "removed" not in channel_pruned.forms[CLASSIFIER], channel_pruned.forms[CLASSIFIER]


def test_channel_forms_report_the_channels_really_removed(demo):
    loaded, _, _, _ = demo
    recipe = {"version": 1, "defaults": {"prune": None, "quantize": None}}
    recipe["layers"] = {STEM: {"prune": {"structure": "channel", "sparsity": 0.3}}}
    result = optimize(loaded, parse_recipe(recipe))
    stem = next(layer for layer in find_layers(result.model, {}) if layer.name == STEM)
    assert stem.out_channels == 16  # 32 × 0.7 = 22.4, rounded to a multiple of 16
    assert result.forms[STEM].startswith("50% of channels removed"), result.forms[STEM]


def test_two_of_four_pruning_on_the_pointwise_convs(demo, run_onnx):
    loaded, x, _, _ = demo
    before = weights_by_layer(loaded.model)
    pointwise = [name for name in before if "/pointwise/" in name]
    assert len(pointwise) == 7
    recipe = {"version": 1, "defaults": {"prune": None, "quantize": None}}
    recipe["layers"] = {name: {"prune": {"structure": "2:4"}} for name in pointwise}
    result = optimize(loaded, parse_recipe(recipe))
    after = weights_by_layer(result.model)
    for name in pointwise:
        weight = after[name]  # [out, in, 1, 1]: groups of 4 consecutive input channels
        out_channels, in_channels = weight.shape[:2]
        groups = weight.reshape(out_channels, in_channels // 4, 4)
        assert (np.count_nonzero(groups, axis=-1) <= 2).all(), name
        original = np.abs(before[name].reshape(groups.shape))
        kept = np.where(groups != 0, original, np.inf).min(axis=-1)
        dropped = np.where(groups == 0, original, -np.inf).max(axis=-1)
        assert (kept >= dropped).all(), name  # the two largest magnitudes of each group survive
        assert result.sparsity[name] == 0.5
    for name in set(before) - set(pointwise):
        np.testing.assert_array_equal(after[name], before[name])
    assert run_onnx(result.model, {"input": x[:8]})[0].shape == (8, 10)


# ---------------------------------------------------------------------------------------------------
# Errors, the cache, files and cancelling.


def test_a_recipe_naming_an_unknown_layer_is_refused(demo):
    loaded, _, _, calib = demo
    recipe = default_recipe().with_layer("/blocks/blocks.9/Conv", quantize=None)
    with pytest.raises(RecipeError, match="'/blocks/blocks.9/Conv'") as caught:
        optimize(loaded, recipe, calib)
    assert caught.value.layer == "/blocks/blocks.9/Conv"


@pytest.mark.parametrize("calibration", [None, np.zeros((0, 1, 28, 28), np.float32)], ids=["none", "empty"])
def test_quantizing_without_calibration_data_is_refused(demo, calibration):
    loaded, _, _, _ = demo
    with pytest.raises(DatasetError, match="calibration data"):
        optimize(loaded, default_recipe(), calibration)


def test_a_one_layer_edit_reuses_the_calibration(demo, int8_recipe, int8_run):
    loaded, _, _, calib = demo
    first, cache = int8_run
    calibrations = cache.calibration.calibrations
    edited = int8_recipe.with_layer(CLASSIFIER, quantize={"weight_bits": 4})
    assert edited.settings_for(CLASSIFIER).quantize.weight_bits == 4
    result = optimize(loaded, edited, calib, cache)
    assert not first.calibration_cached and result.calibration_cached
    assert cache.calibration.calibrations == calibrations  # no calibration ran
    assert "int4 weights" in result.forms[CLASSIFIER]
    assert "int8 weights" in result.forms[STEM]


def test_the_source_file_and_its_folder_are_left_alone(tmp_path, demo, folder_untouched):
    _, _, _, calib = demo
    folder = tmp_path / "model"
    folder.mkdir()
    source = folder / "digits_net.onnx"
    shutil.copy(DEMO_MODEL, source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    with folder_untouched(folder):
        loaded = load_model(source)
        result = optimize(loaded, default_recipe(), calib)
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest
    assert sorted(os.listdir(folder)) == ["digits_net.onnx"]
    assert result.model is not loaded.model


def test_closing_during_calibration_leaves_no_temporary_folders(demo, tmp_path, monkeypatch):
    loaded, _, _, calib = demo
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))  # only this test's temporary files land here
    temp = Path(tempfile.gettempdir())
    assert temp == private

    def ours() -> set[str]:
        return {p.name for p in temp.iterdir() if p.name.startswith(("slimscope-", "ort"))}

    before = ours()
    task = iter_optimize(loaded, default_recipe(), calib)
    messages = []
    for progress in task:
        messages.append(progress.message)
        if progress.message.startswith("Calibrating"):
            break
    else:
        pytest.fail(f"no calibration progress arrived: {messages}")
    assert "Preparing the model for quantization" in messages
    assert any(name.startswith("slimscope-calibrate-") for name in ours() - before)  # the calibrator's folder
    task.close()
    assert ours() - before == set()
    assert list(temp.iterdir()) == []
    with pytest.raises(StopIteration):
        next(task)
