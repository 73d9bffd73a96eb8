"""Cross-layer equalization: the float function is kept while per-channel weight ranges become alike;
ReLU6 is crossed only on request; the recipe's "ptq" switches round-trip and reach the quantizer's cache."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from slimscope.core.errors import RecipeError
from slimscope.core.quantize import CalibrationCache, iter_quantize
from slimscope.core.quantize.equalize import equalize_model
from slimscope.core.recipe import PtqSpec, QuantSpec, default_recipe, parse_recipe
from slimscope.core.recipe_files import dumps_recipe, loads_recipe
from slimscope.core.tasks import run_sync

C = 8  # channels through the chain


def chain_model(activation: str = "Relu") -> onnx.ModelProto:
    """conv (3→C) → act → depthwise conv (C) → act → conv (C→4), channel ranges spread over 10^±2."""
    rng = np.random.default_rng(0)
    spread = np.logspace(-2, 2, C).astype(np.float32)  # channel i of conv1 is 10^(-2..2) times larger
    w1 = rng.standard_normal((C, 3, 3, 3)).astype(np.float32) * spread[:, None, None, None]
    b1 = rng.standard_normal(C).astype(np.float32) * spread
    wd = rng.standard_normal((C, 1, 3, 3)).astype(np.float32) / spread[::-1, None, None, None]
    bd = rng.standard_normal(C).astype(np.float32)
    w3 = rng.standard_normal((4, C, 1, 1)).astype(np.float32) * spread[None, ::-1, None, None]
    inits = [
        numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (wd, "wd"), (bd, "bd"), (w3, "w3"))
    ]
    clip_inputs = []
    if activation == "Clip":
        inits += [numpy_helper.from_array(np.array(v, np.float32), n) for v, n in ((0.0, "lo"), (6.0, "hi"))]
        clip_inputs = ["lo", "hi"]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node(activation, ["c1", *clip_inputs], ["a1"], name="act1"),
        helper.make_node("Conv", ["a1", "wd", "bd"], ["c2"], name="dw", pads=[1, 1, 1, 1], group=C),
        helper.make_node(activation, ["c2", *clip_inputs], ["a2"], name="act2"),
        helper.make_node("Conv", ["a2", "w3"], ["y"], name="conv3"),
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4, 8, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def channel_spread(model: onnx.ModelProto, name: str) -> float:
    """Largest over smallest per-output-channel max |w| of a weight."""
    weight = next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == name)
    ranges = np.abs(weight.reshape(weight.shape[0], -1)).max(axis=1)
    return float(ranges.max() / ranges.min())


def test_equalization_keeps_outputs_and_evens_ranges(run_onnx):
    model = chain_model()
    original = model.SerializeToString()
    x = np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32)
    result = equalize_model(model)
    assert model.SerializeToString() == original  # the input is not changed
    assert result.pairs == 2  # conv1 → dw and dw → conv3
    before, after = run_onnx(model, {"x": x})[0], run_onnx(result.model, {"x": x})[0]
    assert np.abs(after - before).max() <= 1e-4 * np.abs(before).max()
    for name in ("w1", "wd"):
        assert channel_spread(model, name) > 1000
        assert channel_spread(result.model, name) < channel_spread(model, name) / 100
    assert result.spread_after < result.spread_before / 100
    assert "2 conv pairs" in result.notes[0]


def test_relu6_is_crossed_only_on_request(run_onnx):
    model = chain_model("Clip")
    kept = equalize_model(model)
    assert kept.pairs == 0 and kept.model.SerializeToString() == model.SerializeToString()
    assert any("relu6_to_relu" in note for note in kept.notes)
    replaced = equalize_model(model, relu6_to_relu=True)
    assert replaced.pairs == 2
    assert [n.op_type for n in replaced.model.graph.node] == ["Conv", "Relu", "Conv", "Relu", "Conv"]
    assert channel_spread(replaced.model, "wd") < channel_spread(model, "wd") / 100
    # Equal to the model with ReLU in place of ReLU6, not to the ReLU6 model.
    relu = chain_model("Relu")
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)
    expected = run_onnx(relu, {"x": x})[0]
    assert np.abs(run_onnx(replaced.model, {"x": x})[0] - expected).max() <= 1e-4 * np.abs(expected).max()


def test_shared_or_exposed_tensors_are_not_rescaled():
    model = chain_model()
    model.graph.output.append(helper.make_tensor_value_info("a1", TensorProto.FLOAT, None))
    result = equalize_model(model)
    assert result.pairs == 1  # conv1's output is seen outside: only dw → conv3 may be rescaled
    w1 = lambda m: next(numpy_helper.to_array(t) for t in m.graph.initializer if t.name == "w1")  # noqa: E731
    assert np.array_equal(w1(model), w1(result.model))


def test_quantizer_caches_equalized_and_plain_forms_apart():
    model = chain_model()
    x = np.random.default_rng(3).standard_normal((16, 3, 8, 8)).astype(np.float32)
    cache = CalibrationCache()
    spec = {"conv1": QuantSpec(granularity="per_tensor")}
    plain = run_sync(iter_quantize(model, spec, x, cache=cache))
    equalized = run_sync(iter_quantize(model, spec, x, cache=cache, ptq=PtqSpec(equalize=True)))
    assert not equalized.calibration_cached and cache.calibrations == 2
    assert any("equalization rescaled 2 conv pairs" in note for note in equalized.notes)
    assert plain.model.SerializeToString() != equalized.model.SerializeToString()
    again = run_sync(iter_quantize(model, spec, x, cache=cache, ptq=PtqSpec(equalize=True)))
    assert again.calibration_cached and cache.calibrations == 2
    assert again.model.SerializeToString() == equalized.model.SerializeToString()
    assert run_sync(iter_quantize(model, spec, x, cache=cache)).calibration_cached


def test_ptq_section_round_trips_and_old_recipes_load():
    data = {"version": 1, "defaults": {"quantize": {}}}
    assert parse_recipe(data).ptq == PtqSpec()
    assert "ptq" not in parse_recipe(data).to_dict()  # written only when used
    ptq = {"equalize": True, "relu6_to_relu": True, "bias_correction": True, "keep_first_last": "int16"}
    recipe = parse_recipe(data | {"ptq": ptq})
    assert recipe.ptq == PtqSpec(True, True, True, "int16")
    text = dumps_recipe(recipe)
    assert json.loads(text)["ptq"] == ptq and loads_recipe(text) == recipe
    edited = recipe.with_layer("conv1", quantize=None).with_data({"calibration_samples": 64})
    assert edited.ptq == recipe.ptq
    assert default_recipe().with_ptq(PtqSpec(bias_correction=True)).to_dict()["ptq"] == {
        "bias_correction": True
    }
    assert "ptq" not in recipe.with_ptq(PtqSpec()).to_dict()


@pytest.mark.parametrize(
    ("ptq", "field"),
    [
        ({"equalize": "yes"}, "ptq.equalize"),
        ({"keep_first_last": "int8"}, "ptq.keep_first_last"),
        ({"relu6_to_relu": True}, "ptq.relu6_to_relu"),  # without equalize it would do nothing
        ({"equalise": True}, "ptq.equalise"),
    ],
)
def test_invalid_ptq_is_refused(ptq, field):
    with pytest.raises(RecipeError) as info:
        parse_recipe({"version": 1, "ptq": ptq})
    assert info.value.field == field
