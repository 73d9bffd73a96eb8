"""The `slimscope` command line, in-process and as a real process: output, JSON, recipes, errors."""

from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from slimscope import __version__
from slimscope.core.cli import main
from slimscope.core.recipe_files import load_recipe, loads_recipe
from slimscope.resources import DEMO_MODEL

# name → (op, weight shape, bias size): the model the tests inspect.
LAYERS = {"conv1": ("Conv", (4, 3, 3, 3), 4), "fc": ("Gemm", (5, 144), 5)}
CONV_MACS = 4 * 6 * 6 * 3 * 3 * 3
FC_MACS = 5 * 144


def build_tiny_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    conv_w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    conv_w[1, 0] = 0.0  # a pruned kernel: 9 exact zeros
    weights = {
        "conv1.weight": conv_w,
        "conv1.bias": rng.standard_normal(4).astype(np.float32),
        "fc.weight": rng.standard_normal((5, 144)).astype(np.float32),
        "fc.bias": np.zeros(5, np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "conv1.weight", "conv1.bias"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "tiny.onnx"
    onnx.save(build_tiny_model(), path)
    return path


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    """Files the CLI must refuse with one line; the pickle's payload would create `ran.txt`."""
    folder = tmp_path_factory.mktemp("bad")
    (folder / "empty.onnx").write_bytes(b"")

    class Payload:
        def __reduce__(self):
            return (open, (str(folder / "ran.txt"), "w"))

    (folder / "model.onnx").write_bytes(pickle.dumps(Payload(), protocol=4))  # a pickle, named .onnx
    (folder / "weights.pkl").write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=2))

    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x)

    traced = torch.jit.trace(Net().eval(), torch.zeros(1, 4))
    torch.jit.save(traced, str(folder / "scripted.pt"))
    return {
        "missing": folder / "missing.onnx",
        "empty": folder / "empty.onnx",
        "pickle": folder / "model.onnx",
        "pickle2": folder / "weights.pkl",
        "torchscript": folder / "scripted.pt",
        "folder": folder,
    }


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def run_process(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="error")
    return subprocess.run(
        [sys.executable, "-m", "slimscope", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def row_of(table: str, name: str) -> list[str]:
    rows = [line.split() for line in table.splitlines() if line.split()[:1] == [name]]
    assert len(rows) == 1, f"{name!r} should have one row in:\n{table}"
    return rows[0]


def assert_table(text: str, path: Path) -> None:
    assert str(path) in text
    for name, (op, shape, bias) in LAYERS.items():
        row = row_of(text, name)
        assert row[1] == op
        assert row[2] == "x".join(map(str, shape))
        assert row[3] == str(math.prod(shape) + bias)  # below 1000: printed exactly
    assert "2 layers" in text
    assert f"{(CONV_MACS + FC_MACS) / 1e3:.2f}k MACs per inference" in text


# ---------------------------------------------------------------- inspect


def test_inspect_table(capsys, tiny_model):
    code, out, err = run_cli(capsys, "inspect", tiny_model)
    assert code == 0, err
    assert_table(out, tiny_model)
    assert row_of(out, "conv1")[5] == f"{9 / 108:.1%}"  # the pruned kernel's sparsity
    assert row_of(out, "fc")[5] == "0.0%"


def test_inspect_table_in_a_real_process(tiny_model):
    result = run_process("inspect", tiny_model)
    assert result.returncode == 0, result.stderr
    assert_table(result.stdout, tiny_model)
    assert result.stderr == ""


def test_inspect_json(capsys, tiny_model):
    code, out, err = run_cli(capsys, "inspect", tiny_model, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["source"] == str(tiny_model)
    assert data["format"] == "onnx"
    assert data["opset"] == 17
    assert data["inputs"] == {"x": [1, 3, 6, 6]}
    totals = data["totals"]
    assert totals["layers"] == 2
    assert totals["params"] == sum(math.prod(s) + b for _, s, b in LAYERS.values())
    assert totals["macs"] == CONV_MACS + FC_MACS
    assert totals["file_size"] == tiny_model.stat().st_size

    assert [layer["name"] for layer in data["layers"]] == list(LAYERS)
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(tiny_model).graph.initializer}
    for layer in data["layers"]:
        op, shape, bias = LAYERS[layer["name"]]
        w = weights[f"{layer['name']}.weight"]
        assert layer["op"] == op
        assert layer["shape"] == list(shape)
        assert layer["params"] == math.prod(shape) + bias
        assert layer["macs"] == {"conv1": CONV_MACS, "fc": FC_MACS}[layer["name"]]
        assert layer["sparsity"] == pytest.approx(np.count_nonzero(w == 0) / w.size)
        assert layer["min"] == pytest.approx(float(w.min()))
        assert layer["max"] == pytest.approx(float(w.max()))
        assert layer["mean"] == pytest.approx(float(w.mean()), rel=1e-5, abs=1e-7)
        assert layer["std"] == pytest.approx(float(np.std(w.astype(np.float64))), rel=1e-6)
        histogram = layer["histogram"]
        assert len(histogram["edges"]) == len(histogram["counts"]) + 1 == 129
        assert sum(histogram["counts"]) == math.prod(shape)
        channels = layer["channels"]
        assert {"min", "max", "l1"} <= channels.keys()
        rows = w.reshape(shape[0], -1)
        np.testing.assert_allclose(channels["min"], rows.min(axis=1), rtol=1e-6)
        np.testing.assert_allclose(channels["max"], rows.max(axis=1), rtol=1e-6)
        np.testing.assert_allclose(channels["l1"], np.abs(rows).sum(axis=1), rtol=1e-5)
        sparsity_map = layer["sparsity_map"]
        assert {"values", "row_starts", "col_starts"} <= sparsity_map.keys()
        assert len(sparsity_map["values"]) == len(sparsity_map["row_starts"]) == shape[0]
        assert len(sparsity_map["values"][0]) == len(sparsity_map["col_starts"])
    conv_map = np.array(data["layers"][0]["sparsity_map"]["values"])
    assert conv_map.shape == (4, 3) and conv_map[1, 0] == 1.0 and conv_map.sum() == 1.0


def test_inspect_json_in_a_real_process(tiny_model):
    result = run_process("inspect", tiny_model, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [layer["name"] for layer in data["layers"]] == list(LAYERS)
    assert data["totals"]["macs"] == CONV_MACS + FC_MACS


def test_input_shape_option_sets_the_macs(capsys, tmp_path):
    model = build_tiny_model()
    dim = model.graph.input[0].type.tensor_type.shape.dim
    dim[0].dim_param, dim[2].dim_param, dim[3].dim_param = "N", "H", "W"
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    path = tmp_path / "dynamic.onnx"
    onnx.save(model, path)

    code, out, _ = run_cli(capsys, "inspect", path, "--json")
    assert code == 0
    assert json.loads(out)["totals"]["macs"] is None
    code, out, _ = run_cli(capsys, "inspect", path)
    assert code == 0 and "unknown (give --input-shape)" in out

    code, out, err = run_cli(capsys, "inspect", path, "--json", "--input-shape", "2x3x6x6")
    assert code == 0, err
    data = json.loads(out)
    assert data["layers"][0]["macs"] == 2 * CONV_MACS
    assert data["totals"]["macs"] == 2 * (CONV_MACS + FC_MACS)


# ---------------------------------------------------------------- errors: one line, exit code 2

BAD_INPUTS = {
    "missing file": (["inspect", "{missing}"], "does not exist"),
    "empty file": (["inspect", "{empty}"], "empty"),
    "pickle named .onnx": (["inspect", "{pickle}"], "pickle"),
    "pickle": (["recipe", "{pickle2}"], "pickle"),
    "bad input shape": (["inspect", "{model}", "--input-shape", "1xAx3"], "1xAx3"),
    "shape of wrong rank": (["inspect", "{model}", "--input-shape", "1x3x6"], "dimensions"),
    "torchscript without --trust": (["inspect", "{torchscript}"], "--trust"),
    "a folder": (["inspect", "{folder}"], "folder"),
}


def bad_argv(case: str, bad_files: dict[str, Path], model: Path) -> tuple[list[str], str]:
    argv, expected = BAD_INPUTS[case]
    names = {key: str(path) for key, path in bad_files.items()} | {"model": str(model)}
    return [a.format(**names) for a in argv], expected


def assert_one_line_error(code: int, out: str, err: str, expected: str) -> None:
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("slimscope: error: ")
    assert "Traceback" not in err and "unexpected" not in err  # a sentence, not a bug report
    assert expected in lines[0]


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_code_2(capsys, case, bad_files, tiny_model):
    argv, expected = bad_argv(case, bad_files, tiny_model)
    code, out, err = run_cli(capsys, *argv)
    assert_one_line_error(code, out, err, expected)
    assert not (bad_files["folder"] / "ran.txt").exists()  # the pickle's payload never ran


@pytest.mark.parametrize(
    "case",
    ["missing file", "empty file", "pickle named .onnx", "bad input shape", "torchscript without --trust"],
)
def test_bad_input_in_a_real_process(case, bad_files, tiny_model):
    argv, expected = bad_argv(case, bad_files, tiny_model)
    result = run_process(*argv)
    assert_one_line_error(result.returncode, result.stdout, result.stderr, expected)
    assert not (bad_files["folder"] / "ran.txt").exists()


def test_debug_shows_the_traceback_instead(bad_files):
    result = run_process("--debug", "inspect", bad_files["missing"])
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "ModelLoadError" in result.stderr


# ---------------------------------------------------------------- recipe


def test_recipe_lists_every_layer(capsys, tiny_model):
    code, out, err = run_cli(capsys, "recipe", tiny_model)
    assert code == 0, err
    recipe = loads_recipe(out)
    assert [name for name, _ in recipe.layers] == list(LAYERS)
    assert json.loads(out)["layers"].keys() == LAYERS.keys()
    assert recipe.unknown_layers(list(LAYERS)) == []


def test_recipe_to_a_file(capsys, tiny_model, tmp_path):
    target = tmp_path / "out" / "recipe.json"
    target.parent.mkdir()
    code, out, err = run_cli(capsys, "recipe", tiny_model, "-o", target)
    assert code == 0, err
    assert out == ""
    recipe = load_recipe(target)
    assert [name for name, _ in recipe.layers] == list(LAYERS)
    assert sorted(p.name for p in target.parent.iterdir()) == ["recipe.json"]  # no temporary left


def test_recipe_in_a_real_process(tiny_model):
    result = run_process("recipe", tiny_model)
    assert result.returncode == 0, result.stderr
    assert [name for name, _ in loads_recipe(result.stdout).layers] == list(LAYERS)


# ---------------------------------------------------------------- version and the demo


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"slimscope {__version__}"


def test_version_in_a_real_process():
    result = run_process("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"slimscope {__version__}"


@pytest.mark.skipif(
    not DEMO_MODEL.exists(), reason="the demo model has not been built (resources/build_demo.py)"
)
def test_no_arguments_show_the_demo_model(capsys):
    from slimscope.core.inspection import iter_inspect
    from slimscope.core.loading import load_model
    from slimscope.core.tasks import run_sync

    code, out, err = run_cli(capsys)
    assert code == 0, err
    assert str(DEMO_MODEL) in out
    names = [layer.name for layer in run_sync(iter_inspect(load_model(DEMO_MODEL), with_stats=False)).layers]
    assert names
    for name in names:
        row_of(out, name)
    assert f"{len(names)} layers" in out
