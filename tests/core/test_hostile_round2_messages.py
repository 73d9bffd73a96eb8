"""The second hostile round, "messages a user understands" (issue 13, items 10, 12, 13).

Whole commands (tests/data/hostile/round2_cases.py, COMMAND_CASES) run as real `slimscope` processes: a
refusal is exactly one line on stderr with exit code 2, a success prints nothing on stderr (no Python
warnings, no `WARNING:root` from onnxruntime's quantizer, no onnxruntime log lines). The model files the
loader refuses are in the corpus itself (tests/core/test_hostile_corpus.py runs them). Below them, the
pieces: local functions, weight checks, sparse and subgraph weights, preprocessing values, quiet output,
escaped names, short temporary names.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from slimscope.core.errors import ModelLoadError, OptimizeError, RecipeError, escaped_lines, one_line
from slimscope.core.loading import load_model
from slimscope.core.loading.weight_checks import refuse_nonfinite_weights
from slimscope.core.recipe import parse_recipe

ROOT = Path(__file__).resolve().parents[2]
HOSTILE = ROOT / "tests" / "data" / "hostile"
DEMO = ROOT / "resources" / "demo"


def _module(name: str) -> ModuleType:
    """build_corpus.py and round2_cases.py (not a package: imported from their paths, once)."""
    if name not in sys.modules:
        sys.path.insert(0, str(HOSTILE))
        spec = importlib.util.spec_from_file_location(name, HOSTILE / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules[name]


build_corpus = _module("build_corpus")
round2 = _module("round2_cases")


# ---------------------------------------------------------------------------------------------------
# Whole commands


@pytest.fixture(scope="module")
def round2_copy(tmp_path_factory) -> Path:
    return round2.prepare_copy(HOSTILE / round2.ROUND2, tmp_path_factory.mktemp("round2") / "round2")


@pytest.mark.parametrize("case", round2.COMMAND_CASES, ids=[c.name for c in round2.COMMAND_CASES])
def test_a_round2_command_says_one_line_or_nothing_on_stderr(case, round2_copy, tmp_path, folder_untouched):
    argv = round2.command_line(case, round2_copy, tmp_path, DEMO)

    with folder_untouched(round2_copy):
        result = round2.run_command(argv)

    assert round2.command_problem(case, result) is None, round2.command_problem(case, result)
    if case.exit_code:
        assert result.stdout == ""  # nothing half-done was reported
        assert list(tmp_path.iterdir()) == []  # and nothing written
    elif "-o" in case.argv:  # what was written is whole, under its own name (one is 250 bytes), no temporary
        written = [p.name for p in tmp_path.iterdir()]
        assert written and not [name for name in written if name.startswith(".") or name.endswith(".part")]
        assert all(onnx.load(tmp_path / name).graph.node for name in written if name.endswith(".onnx"))
    shown = [
        line for line in build_corpus.DOCS.read_text().splitlines() if line.startswith(f"| {case.case} |")
    ]
    assert len(shown) == 1, "docs/hostile_files.md is stale: run tests/data/hostile/build_corpus.py"
    assert case.fragment.replace("|", "\\|") in shown[0]


def test_evaluate_takes_the_trust_and_input_shape_its_messages_suggest():
    from slimscope.core.cli import build_parser

    args = build_parser().parse_args(
        ["evaluate", "a.pt", "b.onnx", "--data", "d.npz", "--trust", "--input-shape", "1x3x8x8"]
    )

    assert args.trust and args.input_shape == "1x3x8x8"


# ---------------------------------------------------------------------------------------------------
# Library output stays off the terminal


_NOISY = textwrap.dedent(
    """
    import logging, sys, warnings
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    if sys.argv[1] == "quiet":
        from slimscope.core.quiet_output import quiet_library_output
        quiet_library_output()
    warnings.warn("a library warning", RuntimeWarning)
    logging.warning("failed to infer the type of tensor")  # as onnxruntime's quantizer does
    bias = numpy_helper.from_array(np.zeros(5, np.float32), "b")  # does not broadcast to 3 outputs
    weight = numpy_helper.from_array(np.zeros((3, 4), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    try:
        session.run(None, {"x": np.zeros((1, 4), np.float32)})
    except Exception:
        print("raised")
    """
)


def test_library_warnings_and_log_lines_reach_stderr_unless_quieted():
    def run(mode: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
        return subprocess.run(
            [sys.executable, "-c", _NOISY, mode], capture_output=True, text=True, timeout=120, env=env
        )

    loud, quiet = run("loud"), run("quiet")

    assert loud.stdout == quiet.stdout == "raised\n"
    assert "a library warning" in loud.stderr and "WARNING:root:" in loud.stderr
    assert "\x1b[" in loud.stderr and "onnxruntime" in loud.stderr  # its coloured log line
    assert quiet.stderr == ""


# ---------------------------------------------------------------------------------------------------
# Models: local functions, weights, groups, sparse and subgraph weights


def _save(model: onnx.ModelProto, folder: Path, name: str = "model.onnx") -> Path:
    path = folder / name
    path.write_bytes(model.SerializeToString())
    return path


def _round2_model(name: str) -> onnx.ModelProto:
    return onnx.load_model_from_string(round2.round2_files(build_corpus.base_model)[name]())


def test_a_conv_inside_a_local_function_is_a_layer(tmp_path):
    from slimscope.core.layers import find_layers

    loaded = load_model(_save(_round2_model("local-function-conv.onnx"), tmp_path))

    assert not loaded.model.functions
    assert [layer.op_type for layer in find_layers(loaded.model, {})] == ["Conv", "Gemm"]
    assert loaded.notes[0] == "Expanded 1 local function into the graph, so that the layers inside show."


def test_valid_grouped_convolutions_still_load(tmp_path):
    """Depthwise Conv (group = channels) and a grouped ConvTranspose: the group checks refuse neither."""
    weights = [
        numpy_helper.from_array(np.ones((4, 1, 3, 3), np.float32), "dw"),
        numpy_helper.from_array(np.ones((4, 3, 2, 2), np.float32), "up"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "dw"], ["d"], name="depthwise", group=4, pads=[1] * 4),
        helper.make_node("ConvTranspose", ["d", "up"], ["y"], name="up", group=2, strides=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], weights,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)

    loaded = load_model(_save(model, tmp_path))

    assert [n.name for n in loaded.model.graph.node] == ["depthwise", "up"]


def test_a_sparse_weight_becomes_the_dense_weight_it_stands_for(tmp_path):
    dense = np.zeros((3, 4), np.float32)
    dense[0, 1], dense[2, 3] = 1.5, -2.0
    coordinates = numpy_helper.from_array(np.array([[0, 1], [2, 3]], np.int64), "w_indices")
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.array([1.5, -2.0], np.float32), "w"), coordinates, [3, 4]
    )
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], sparse_initializer=[sparse],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)

    loaded = load_model(_save(model, tmp_path))

    assert not loaded.model.graph.sparse_initializer
    weight = next(t for t in loaded.model.graph.initializer if t.name == "w")
    np.testing.assert_array_equal(numpy_helper.to_array(weight), dense)


def test_weights_in_subgraphs_are_named_in_a_note(tmp_path):
    loaded = load_model(_save(_round2_model("subgraph-weights.onnx"), tmp_path))

    assert (
        "2 weights inside If/Loop/Scan subgraphs are not shown and are left as they are when optimizing."
        in loaded.notes
    )


@pytest.mark.parametrize(
    ("name", "said"),
    [("nan-weight.onnx", "1 NaN (not-a-number) value among its 18"), ("inf-bias.onnx", "1 infinite value")],
)
def test_a_non_finite_weight_is_noted_on_opening_and_refused_for_optimizing(name, said, tmp_path):
    loaded = load_model(_save(_round2_model(name), tmp_path))

    assert any(said in note for note in loaded.notes)
    with pytest.raises(OptimizeError, match="the file is damaged"):
        refuse_nonfinite_weights(loaded.model)


def test_a_weight_of_a_type_its_operator_takes_is_not_refused(tmp_path):
    """The type check reads onnx's schemas: an int64 shape for Reshape and a float weight pass."""
    shape = numpy_helper.from_array(np.array([1, 72], np.int64), "shape")
    model = build_corpus.base_model()
    model.graph.initializer.append(shape)
    flatten = next(n for n in model.graph.node if n.name == "flatten")
    flatten.op_type, flatten.input[:] = "Reshape", ["r", "shape"]
    del flatten.attribute[:]

    assert load_model(_save(model, tmp_path)).model.graph.node[2].op_type == "Reshape"


def test_a_weight_of_the_wrong_number_type_is_refused(tmp_path):
    model = build_corpus.base_model()
    bias = next(t for t in model.graph.initializer if t.name == "conv.bias")
    bias.CopyFrom(numpy_helper.from_array(np.array([1, 2], np.int64), "conv.bias"))

    with pytest.raises(ModelLoadError, match="holds int64 values, which Conv does not take there"):
        load_model(_save(model, tmp_path))


# ---------------------------------------------------------------------------------------------------
# Recipes: preprocessing numbers


@pytest.mark.parametrize(
    ("preprocess", "field"),
    [({"scale": float("inf")}, "scale"), ({"mean": [0.5, float("nan"), 0.5]}, "mean"),
     ({"std": [1e-320]}, "std"), ({"std": [1e-38], "scale": 1e30}, "std")],
    ids=["scale-infinity", "mean-nan", "std-denormal", "overflow"],
)  # fmt: skip
def test_preprocessing_numbers_that_make_inputs_infinite_are_refused(preprocess, field):
    with pytest.raises(RecipeError) as caught:
        parse_recipe({"version": 1, "data": {"preprocess": preprocess}})

    assert str(caught.value).startswith(f"Recipe field 'data.preprocess.{field}': ")
    assert caught.value.field == f"data.preprocess.{field}"


def test_everyday_preprocessing_numbers_pass():
    imagenet = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "scale": 1 / 255}

    recipe = parse_recipe({"version": 1, "data": {"preprocess": imagenet}})

    assert recipe.data["preprocess"] == imagenet


# ---------------------------------------------------------------------------------------------------
# Names in what is printed, and the temporary names beside outputs


def test_control_characters_are_escaped_line_by_line():
    assert one_line("a\nb\x1b[2J\u2028c") == "a\\nb\\x1b[2J\\u2028c"
    assert escaped_lines("wrote o\x1b[31m.onnx\nnote: fine") == "wrote o\\x1b[31m.onnx\nnote: fine"


def test_the_summary_shows_an_output_name_with_a_line_break_on_one_line():
    from slimscope.core.optimize_summary import format_summary

    text = format_summary({"output": "/tmp/o\nslimscope: done.onnx", "warnings": [], "notes": ["a\x1b[2J"]})

    assert "wrote /tmp/o\\nslimscope: done.onnx\n" in text and "note: a\\x1b[2J" in text


def test_files_with_names_of_250_bytes_are_written_atomically(tmp_path):
    from slimscope.core.export import write_atomically
    from slimscope.core.recipe import default_recipe
    from slimscope.core.recipe_files import load_recipe, save_recipe

    report, recipe = tmp_path / ("r" * 245 + ".json"), tmp_path / ("c" * 245 + ".json")

    write_atomically(report, b"{}\n")
    save_recipe(default_recipe(), recipe)

    assert report.read_bytes() == b"{}\n" and load_recipe(recipe) == default_recipe()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([report.name, recipe.name])
