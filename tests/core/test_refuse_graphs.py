"""Versions and operators onnxruntime cannot run, incomplete graphs, and what a bit-flip fuzzer found."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.reference
from onnx import TensorProto, helper, numpy_helper
from refusal_support import expect_refusal

from slimscope.core.errors import ModelLoadError

# ---------------------------------------------------------------------------------------------------
# Versions and operators onnxruntime cannot run, and incomplete graphs


def _identity(small_model, **kwargs) -> onnx.ModelProto:
    return small_model([helper.make_node("Identity", ["x"], ["y"])], **kwargs)


def test_opset_999(small_model, save_onnx, load_untouched):
    path = save_onnx(_identity(small_model, opset=999))

    message = expect_refusal(
        load_untouched, path, ModelLoadError, "opset 999", "installed onnxruntime supports up to"
    )
    limit = int(message.rsplit("opset", 1)[1].strip(" ."))
    assert 21 <= limit < 999


def test_ir_version_999(small_model, save_onnx, load_untouched):
    path = save_onnx(_identity(small_model, ir_version=999))

    message = expect_refusal(
        load_untouched, path, ModelLoadError, "IR version 999", "installed onnxruntime supports up to"
    )
    limit = int(message.rsplit(" ", 1)[1].strip("."))
    assert 10 <= limit < 999


def test_an_operator_domain_from_a_custom_library(small_model, save_onnx, load_untouched):
    model = small_model([helper.make_node("Steal", ["x"], ["y"], domain="evil.ops")])
    model.opset_import.append(helper.make_opsetid("evil.ops", 1))
    path = save_onnx(model)

    expect_refusal(load_untouched, path, ModelLoadError, "'evil.ops'", "custom-operator library")


def test_an_operator_domain_the_model_never_imports(small_model, save_onnx, load_untouched):
    path = save_onnx(small_model([helper.make_node("Steal", ["x"], ["y"], name="steal", domain="evil.ops")]))

    expect_refusal(load_untouched, path, ModelLoadError, "'steal'", "'evil.ops'", "never imports")


def test_an_unknown_operator_in_the_default_domain(small_model, save_onnx, load_untouched):
    path = save_onnx(small_model([helper.make_node("NotAnOperator", ["x"], ["y"], name="mystery")]))

    expect_refusal(
        load_untouched, path, ModelLoadError, "'mystery'", "'NotAnOperator'", "not an ONNX operator"
    )


def test_an_operator_newer_than_the_declared_opset(small_model, save_onnx, load_untouched):
    path = save_onnx(small_model([helper.make_node("Gelu", ["x"], ["y"])], opset=13))

    expect_refusal(load_untouched, path, ModelLoadError, "'Gelu'", "opset 13")


def test_a_node_reading_a_value_nothing_produces(small_model, save_onnx, load_untouched):
    path = save_onnx(small_model([helper.make_node("Add", ["x", "ghost"], ["y"], name="add")]))

    expect_refusal(
        load_untouched, path, ModelLoadError, "'add' reads 'ghost'", "nothing in the model produces"
    )


def test_an_output_nothing_produces(small_model, save_onnx, load_untouched):
    path = save_onnx(small_model([helper.make_node("Relu", ["x"], ["y"])], outputs=["y", "z"]))

    expect_refusal(load_untouched, path, ModelLoadError, "'z' is produced by no node")


def test_a_subgraph_reading_a_value_nothing_produces(small_model, save_onnx, load_untouched):
    branch = helper.make_graph(
        [helper.make_node("Neg", ["phantom"], ["b"])],
        "branch",
        [],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, None)],
    )
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Cast", ["s"], ["cond"], to=TensorProto.BOOL),
        helper.make_node("If", ["cond"], ["y"], name="choose", then_branch=branch, else_branch=branch),
    ]
    path = save_onnx(small_model(nodes))

    expect_refusal(load_untouched, path, ModelLoadError, "reads 'phantom'")


def test_an_operator_name_that_is_not_utf8(small_model, save_onnx, load_untouched):
    path = save_onnx(small_model([helper.make_node("Relu", ["x"], ["y"], name="act")]))
    data = path.read_bytes()
    assert data.count(b"Relu") == 1
    path.write_bytes(data.replace(b"Relu", b"R\xfflu"))  # one damaged byte

    expect_refusal(load_untouched, path, ModelLoadError)


# ---------------------------------------------------------------------------------------------------
# Cases a bit-flip fuzzer found (each crashed an earlier version instead of raising ModelLoadError)


def test_a_graph_name_that_is_not_utf8(small_model, save_onnx, load_untouched):
    model = small_model([helper.make_node("Relu", ["x"], ["y"], name="act")])
    model.graph.name = "graphname"
    path = save_onnx(model)
    path.write_bytes(path.read_bytes().replace(b"graphname", b"\x81raphname"))

    expect_refusal(load_untouched, path, ModelLoadError)


def test_a_tensor_with_more_dimensions_than_any_weight_has(small_model, save_onnx, load_untouched):
    weight = numpy_helper.from_array(np.ones([1] * 40, np.float32), "w")
    model = small_model([helper.make_node("Add", ["x", "w"], ["y"])], initializers=[weight])
    path = save_onnx(model)

    expect_refusal(load_untouched, path, ModelLoadError)


def test_a_conv_group_attribute_of_the_wrong_type_is_not_a_crash(conv_net, save_onnx, load_untouched):
    from slimscope.core.inspection import iter_inspect
    from slimscope.core.tasks import run_sync

    model = conv_net.model
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    conv.attribute.append(helper.make_attribute("group", "one"))  # a string where an int belongs
    path = save_onnx(model)

    try:
        loaded = load_untouched(path)
    except ModelLoadError:
        return  # refusing it is fine too
    report = run_sync(iter_inspect(loaded))
    assert any(layer.op_type == "Conv" for layer in report.layers)
