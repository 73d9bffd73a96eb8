"""Opening ONNX files: weights arrive as written, external data is read, old files are normalized
(computed weights folded, opset upgraded, initializers dropped from the inputs) and still compute the
same thing, and user input shapes are merged with the declared ones. No test writes beside a model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from slimscope.core.errors import InputShapeError
from slimscope.core.loading import iter_load_model
from slimscope.core.loading.input_shapes import parse_input_shapes
from slimscope.core.tasks import Progress, run_sync

# ---------------------------------------------------------------------------------------------------
# A plain model


def test_conv_net_loads_with_the_weights_written(conv_net, save_onnx, load_untouched, weights_of):
    path = save_onnx(conv_net.model, "net.onnx")

    loaded = load_untouched(str(path))  # a str path works as well as a Path

    assert loaded.format == "onnx"
    assert loaded.source == path
    assert loaded.file_size == path.stat().st_size
    assert loaded.opset == 13
    assert loaded.notes == []
    assert [n.op_type for n in loaded.model.graph.node] == ["Conv", "Relu", "Flatten", "Gemm"]
    weights = weights_of(loaded.model)
    assert weights.keys() == conv_net.weights.keys()
    for name, expected in conv_net.weights.items():
        np.testing.assert_array_equal(weights[name], expected, err_msg=name)
        assert weights[name].dtype == np.float32
    assert loaded.input_shapes == {"input": ("N", 3, 8, 8)}
    assert [v.name for v in loaded.model.graph.input] == ["input"]


def test_loaded_conv_net_computes_what_the_file_computes(conv_net, save_onnx, load_untouched, run_onnx):
    path = save_onnx(conv_net.model)
    x = np.random.default_rng(7).standard_normal((2, 3, 8, 8)).astype(np.float32)

    loaded = load_untouched(path)

    (expected,) = run_onnx(path, {"input": x})
    (got,) = run_onnx(loaded.model, {"input": x})
    assert got.shape == (2, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=0)


def test_iter_load_model_reports_progress_and_returns_the_model(
    conv_net, save_onnx, model_dir, folder_untouched
):
    path = save_onnx(conv_net.model)
    seen: list[Progress] = []

    with folder_untouched(model_dir):
        loaded = run_sync(iter_load_model(path), on_progress=seen.append)

    assert loaded.model.graph.node
    assert seen and all(isinstance(p, Progress) for p in seen)
    fractions = [p.fraction for p in seen if p.fraction is not None]
    assert fractions == sorted(fractions)
    assert all(0.0 <= f <= 1.0 for f in fractions)
    assert "model.onnx" in seen[0].message


# ---------------------------------------------------------------------------------------------------
# External data


def _save_with_external_data(model: onnx.ModelProto, save_onnx, name="model.onnx"):
    return save_onnx(
        model,
        name,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )


def test_external_data_is_read_into_memory(conv_net, save_onnx, model_dir, load_untouched, weights_of):
    path = _save_with_external_data(conv_net.model, save_onnx)
    data_file = model_dir / "weights.bin"
    stored = onnx.load_model(path, load_external_data=False)
    assert all(t.data_location == TensorProto.EXTERNAL for t in stored.graph.initializer)
    offsets = [
        dict((e.key, e.value) for e in t.external_data).get("offset", "0") for t in stored.graph.initializer
    ]
    assert len(set(offsets)) == len(offsets)  # the tensors really share one file at different offsets

    loaded = load_untouched(path)

    weights = weights_of(loaded.model)
    for name, expected in conv_net.weights.items():
        np.testing.assert_array_equal(weights[name], expected, err_msg=name)
    for tensor in loaded.model.graph.initializer:
        assert tensor.data_location == TensorProto.DEFAULT
        assert len(tensor.external_data) == 0
    assert loaded.file_size == path.stat().st_size + data_file.stat().st_size


def test_external_data_in_a_subfolder_of_the_model_folder_is_allowed(
    conv_net, save_onnx, model_dir, load_untouched, weights_of
):
    path = _save_with_external_data(conv_net.model, save_onnx)
    (model_dir / "data").mkdir()
    (model_dir / "weights.bin").rename(model_dir / "data" / "weights.bin")
    model = onnx.load_model(path, load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "data/weights.bin"
    onnx.save_model(model, path)

    loaded = load_untouched(path)

    for name, expected in conv_net.weights.items():
        np.testing.assert_array_equal(weights_of(loaded.model)[name], expected, err_msg=name)


# ---------------------------------------------------------------------------------------------------
# An old file: opset 9, computed weights, initializers repeated as graph inputs


def _old_opset_model(ir_version: int) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    rng = np.random.default_rng(3)
    fc_weight = (rng.standard_normal((5, 256)) * 0.1).astype(np.float32)
    stored = {
        "conv.bias": rng.standard_normal(4).astype(np.float32),
        "fc.bias": rng.standard_normal(5).astype(np.float32),
        "conv.weight.shape": np.array([4, 3, 3, 3], dtype=np.int64),
        "fc.weight.shape": np.array([5, 256], dtype=np.int64),
    }
    nodes = [
        helper.make_node(
            "ConstantOfShape",
            ["conv.weight.shape"],
            ["conv.weight"],
            name="make_conv_weight",
            value=helper.make_tensor("value", TensorProto.FLOAT, [1], [0.05]),
        ),
        helper.make_node(
            "Constant",
            [],
            ["fc.weight.flat"],
            name="fc_weight_values",
            value=numpy_helper.from_array(fc_weight.reshape(-1), "fc.weight.flat"),
        ),
        helper.make_node("Reshape", ["fc.weight.flat", "fc.weight.shape"], ["fc.weight"], name="shape_fc"),
        helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["y"], name="fc", transB=1),
    ]
    initializers = [numpy_helper.from_array(value, name) for name, value in stored.items()]
    # IR < 4 requires every initializer to be listed as a graph input too; old exporters did so always.
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])] + [
        helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in initializers
    ]
    graph = helper.make_graph(
        nodes, "old", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], initializers
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=ir_version)
    expected = {
        "conv.weight": np.full((4, 3, 3, 3), 0.05, dtype=np.float32),
        "conv.bias": stored["conv.bias"],
        "fc.weight": fc_weight,
        "fc.bias": stored["fc.bias"],
    }
    return model, expected


@pytest.mark.parametrize("ir_version", [3, 4])
def test_old_opset_model_is_folded_upgraded_and_still_computes_the_same(
    ir_version, save_onnx, load_untouched, run_onnx, weights_of
):
    model, expected = _old_opset_model(ir_version)
    path = save_onnx(model, "old.onnx")
    x = np.random.default_rng(11).standard_normal((1, 3, 8, 8)).astype(np.float32)
    (original_output,) = run_onnx(path, {"x": x})  # onnxruntime runs the original file as it is

    loaded = load_untouched(path)

    assert loaded.opset >= 13
    assert any("opset 9" in note and f"opset {loaded.opset}" in note for note in loaded.notes), loaded.notes
    assert any("Folded 3 nodes" in note for note in loaded.notes), loaded.notes
    assert any("Removed 4 weights" in note for note in loaded.notes), loaded.notes
    graph = loaded.model.graph
    assert [n.op_type for n in graph.node] == ["Conv", "Relu", "Flatten", "Gemm"]
    weights = weights_of(loaded.model)
    assert weights.keys() == expected.keys()  # computed weights are initializers; their inputs are gone
    for name, value in expected.items():
        np.testing.assert_array_equal(weights[name], value, err_msg=name)
    assert [v.name for v in graph.input] == ["x"]
    assert loaded.model.ir_version >= 4
    assert loaded.input_shapes == {"x": (1, 3, 8, 8)}
    onnx.checker.check_model(loaded.model, full_check=True)

    (output,) = run_onnx(loaded.model, {"x": x})
    np.testing.assert_allclose(output, original_output, rtol=1e-5, atol=1e-6)


def test_current_opset_model_is_not_upgraded(conv_net, save_onnx, load_untouched):
    loaded = load_untouched(save_onnx(conv_net.model))

    assert loaded.opset == 13
    assert not any("opset" in note for note in loaded.notes)


# ---------------------------------------------------------------------------------------------------
# Input shapes given by the user


def test_given_input_shape_replaces_the_dynamic_batch(conv_net, save_onnx, load_untouched):
    path = save_onnx(conv_net.model)

    loaded = load_untouched(path, input_shapes=[(4, 3, 8, 8)])

    assert loaded.input_shapes == {"input": (4, 3, 8, 8)}


def test_without_a_given_shape_the_declared_one_is_kept(conv_net, save_onnx, load_untouched):
    loaded = load_untouched(save_onnx(conv_net.model))

    assert loaded.input_shapes == {"input": ("N", 3, 8, 8)}


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        ([(1, 3, 8)], r"'input' has 4 dimensions \(Nx3x8x8\); the shape given, 1x3x8, has 3"),
        ([(1, 3, 8, 8, 1)], r"'input' has 4 dimensions \(Nx3x8x8\); the shape given, 1x3x8x8x1, has 5"),
        ([(1, 4, 8, 8)], r"'input' has size 3 on axis 1 .* says 4"),
        ([(1, 3, 8, 9)], r"'input' has size 8 on axis 3 .* says 9"),
        ([(1, 3, 8, 8), (1, 3, 8, 8)], r"1 input\(s\) \(input\) but 2 shape\(s\)"),
    ],
)
def test_a_given_shape_that_does_not_fit_is_refused(conv_net, save_onnx, load_untouched, shapes, message):
    path = save_onnx(conv_net.model)

    with pytest.raises(InputShapeError, match=message):
        load_untouched(path, input_shapes=shapes)


def test_shapes_are_matched_to_several_inputs_in_order(small_model, save_onnx, load_untouched):
    inputs = [
        helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 3]),
        helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 1]),
    ]
    path = save_onnx(small_model([helper.make_node("Add", ["a", "b"], ["y"])], inputs=inputs))

    assert load_untouched(path).input_shapes == {"a": ("batch", 3), "b": ("batch", 1)}
    loaded = load_untouched(path, input_shapes=[(2, 3), (2, 1)])
    assert loaded.input_shapes == {"a": (2, 3), "b": (2, 1)}
    with pytest.raises(InputShapeError, match="'a' has size 3 on axis 1"):
        load_untouched(path, input_shapes=[(2, 1), (2, 3)])  # swapped
    with pytest.raises(InputShapeError, match="2 input"):
        load_untouched(path, input_shapes=[(2, 3)])


@pytest.mark.parametrize(
    ("text", "shapes"),
    [
        ("1x3x224x224", [(1, 3, 224, 224)]),
        ("1x3x224x224,1x10", [(1, 3, 224, 224), (1, 10)]),
        (" 2 X 3 x 4 , 5 ", [(2, 3, 4), (5,)]),
        ("7", [(7,)]),
    ],
)
def test_parse_input_shapes_reads_good_text(text, shapes):
    assert parse_input_shapes(text) == shapes


@pytest.mark.parametrize(
    ("text", "bad_part"),
    [
        ("", ""),
        ("1x0x3", "1x0x3"),
        ("1x-3", "1x-3"),
        ("abc", "abc"),
        ("1x3,", ""),
        ("1.5x3", "1.5x3"),
        ("1xx3", "1xx3"),
        ("1x3;1x4", "1x3;1x4"),
        ("1*3*224", "1*3*224"),
    ],
)
def test_parse_input_shapes_refuses_bad_text(text, bad_part):
    with pytest.raises(InputShapeError, match="is not an input shape") as caught:
        parse_input_shapes(text)
    assert f"'{bad_part}'" in str(caught.value)


def test_load_model_never_changes_the_file(conv_net, save_onnx, load_untouched):
    path = save_onnx(conv_net.model)
    before = path.read_bytes()

    loaded = load_untouched(path, input_shapes=[(2, 3, 8, 8)])
    loaded.model.graph.node[0].name = "changed in memory"
    again = load_untouched(path)

    assert path.read_bytes() == before
    assert again.model.graph.node[0].name == "conv"


def test_the_folder_check_notices_a_file_written_and_removed_again(model_dir, folder_untouched):
    (model_dir / "model.onnx").write_bytes(b"x")
    with pytest.raises(AssertionError, match="written"), folder_untouched(model_dir):
        (model_dir / "model-inferred.onnx").write_bytes(b"y")
        (model_dir / "model-inferred.onnx").unlink()
    with pytest.raises(AssertionError, match="written"), folder_untouched(model_dir):
        (model_dir / "model.onnx").write_bytes(b"z")  # same size, same name
