"""Models that leave their input size open (free height and width, like OCR and detection networks):
MACs are counted once a size is given or taken from the data, and an int8 model keeps its free sizes and
still runs at any size, from memory and from the exported file."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from free_size_model import CLASSES, GEMM_MACS, conv_macs, free_size_model

from slimscope.core.cli import main
from slimscope.core.data import Dataset
from slimscope.core.errors import InputShapeError
from slimscope.core.export import export_model
from slimscope.core.inspection import count_macs, iter_inspect, with_input_shapes
from slimscope.core.loading import load_model
from slimscope.core.loading.input_shapes import (
    GUESSED_FREE_SIZE,
    guess_input_shapes,
    leaves_size_open,
    merge_input_shapes,
    shapes_for_data,
)
from slimscope.core.optimize import iter_optimize
from slimscope.core.recipe import default_recipe
from slimscope.core.recipe_files import dumps_recipe
from slimscope.core.tasks import run_sync


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "free.onnx"
    onnx.save(free_size_model(), path)
    return path


def images(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, 3, height, width), dtype=np.float32)


def input_dims(model: onnx.ModelProto) -> list:
    return [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]


def run(model: onnx.ModelProto | str, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


# ---------------------------------------------------------------- which size, and the MACs at it


def test_free_sizes_leave_the_macs_open_until_a_size_is_given(model_path):
    loaded = load_model(model_path)
    assert loaded.input_shapes == {"x": ("N", 3, "H", "W")}
    assert leaves_size_open(loaded.input_shapes)
    report = run_sync(iter_inspect(loaded))
    assert report.macs is None and all(layer.macs is None for layer in report.layers)

    measured = with_input_shapes(report, {"x": (1, 3, 48, 192)})
    assert [layer.macs for layer in measured.layers] == [conv_macs(48, 192), GEMM_MACS]
    assert measured.macs == conv_macs(48, 192) + GEMM_MACS
    assert measured.shape_used == {"x": (1, 3, 48, 192)}
    assert measured.stats is report.stats and measured.loaded is report.loaded  # the same model
    # the same numbers as opening the file with that size (the CLI's --input-shape)
    given = run_sync(iter_inspect(load_model(model_path, input_shapes=[(1, 3, 48, 192)])))
    assert [layer.macs for layer in given.layers] == [layer.macs for layer in measured.layers]
    assert with_input_shapes(report, {}).macs is None  # no size: unknown again


def test_macs_from_the_datas_sample_shape(model_path):
    loaded = load_model(model_path)
    data = Dataset(images(5, 40, 100), None, "x", "test")
    shapes = shapes_for_data(loaded.input_shapes, data.sample_shape)
    assert shapes == {"x": (1, 3, 40, 100)}
    assert count_macs(loaded.model, shapes) == conv_macs(40, 100) + GEMM_MACS
    # data that does not fit the fixed channel count gives no size, rather than a wrong one
    assert shapes_for_data(loaded.input_shapes, (1, 40, 100)) == {}
    # fixed sizes win over the data's: they are what the model runs at
    assert shapes_for_data({"x": ("N", 3, 32, 32)}, (3, 40, 100)) == {"x": (1, 3, 32, 32)}


def test_a_size_guess_uses_the_data_then_the_fixed_sizes():
    declared = {"x": ("batch", 3, "?", "?")}
    assert guess_input_shapes(declared, (3, 48, 192)) == {"x": (1, 3, 48, 192)}
    assert guess_input_shapes(declared) == {"x": (1, 3, GUESSED_FREE_SIZE, GUESSED_FREE_SIZE)}
    assert guess_input_shapes({"input1": (1, 1, 64, "image_width")}) == {
        "input1": (1, 1, 64, GUESSED_FREE_SIZE)
    }
    assert not leaves_size_open({"x": ("batch", 3, 224, 224)})  # a free batch alone is counted at 1


def test_a_given_size_must_fit_the_fixed_sizes():
    with pytest.raises(InputShapeError, match="size 3 on axis 1"):
        merge_input_shapes({"x": ("N", 3, "H", "W")}, [(1, 1, 48, 192)])


# ---------------------------------------------------------------- int8 keeps the free sizes


def test_int8_model_keeps_free_sizes_and_runs_at_two_sizes(model_path, tmp_path):
    loaded = load_model(model_path)
    recipe = default_recipe().with_defaults(prune=None)  # int8 only
    result = run_sync(iter_optimize(loaded, recipe, images(32, 32, 32)))
    assert any(node.op_type == "DequantizeLinear" for node in result.model.graph.node)
    assert input_dims(result.model) == ["N", 3, "H", "W"]

    exported = export_model(result.model, tmp_path / "free.int8.onnx", protected=[model_path])
    assert input_dims(onnx.load(exported)) == ["N", 3, "H", "W"]
    for batch, height, width in ((2, 32, 32), (1, 48, 192)):  # the calibration size, and another
        x = images(batch, height, width, seed=height)
        expected = run(loaded.model, x)
        for model in (result.model, str(exported)):
            got = run(model, x)
            assert got.shape == (batch, CLASSES)
            assert np.abs(got - expected).max() < 0.05 * np.abs(expected).max()


def test_cli_optimize_counts_macs_at_the_datas_size(model_path, tmp_path, capsys):
    np.savez(tmp_path / "calib.npz", x=images(16, 24, 40))
    (tmp_path / "int8.json").write_text(dumps_recipe(default_recipe().with_defaults(prune=None)))
    out = tmp_path / "out.onnx"
    argv = ["optimize", model_path, "--recipe", tmp_path / "int8.json", "--eval", tmp_path / "calib.npz"]
    argv += ["-o", out, "--json", "--no-latency"]
    assert main([str(arg) for arg in argv]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["macs"]["original"] == conv_macs(24, 40) + GEMM_MACS
    assert report["macs"]["optimized"] == conv_macs(24, 40) + GEMM_MACS
    assert input_dims(onnx.load(out)) == ["N", 3, "H", "W"]


def test_inspect_says_how_to_give_a_size(model_path, capsys):
    assert main(["inspect", str(model_path)]) == 0
    out = capsys.readouterr().out
    assert (
        "MACs need an input size: the model leaves it open; give one, e.g. --input-shape 1x3x224x224" in out
    )
    assert "unknown (give --input-shape) MACs per inference" in out
    assert main(["inspect", str(model_path), "--input-shape", "1x3x48x192"]) == 0
    out = capsys.readouterr().out
    assert "MACs need an input size" not in out and "unknown" not in out
