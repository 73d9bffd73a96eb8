"""SQNR of a probability output is measured on the logits before its Softmax/Sigmoid, and says so."""

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from slimscope.core.data import Dataset
from slimscope.core.evaluate import evaluate
from slimscope.core.evaluate.logits import plan_measured_outputs, probability_inputs

CLASSES, FEATURES = 10, 8
OFFSET = 100.0  # every logit shares it: Softmax ignores it, a logit SQNR counts it as signal


def classifier(weight: np.ndarray, last: str = "Softmax", reshape_after: bool = True) -> onnx.ModelProto:
    """x [N, 8] → MatMul → Add → Softmax (or Sigmoid) → Reshape [N, 10] → "probabilities"."""
    bias = np.full(CLASSES, OFFSET, np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["logits"]),
        helper.make_node(last, ["logits"], ["p"] if reshape_after else ["probabilities"]),
    ]
    initializers = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")]
    if reshape_after:
        nodes.append(helper.make_node("Reshape", ["p", "shape"], ["probabilities"]))
        initializers.append(numpy_helper.from_array(np.array([-1, CLASSES], np.int64), "shape"))
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", FEATURES])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", CLASSES])], initializers,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sqnr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return 10 * math.log10(np.square(a).sum() / np.square(a - b).sum())


def test_softmax_output_sqnr_is_measured_on_the_logits():
    rng = np.random.default_rng(0)
    weight = rng.normal(0, 4, (FEATURES, CLASSES)).astype(np.float32)
    x = rng.normal(0, 1, (200, FEATURES)).astype(np.float32)
    # The "optimized" model squeezes the logits' spread (as a bad final scale would): the same top class
    # everywhere, sharp probabilities become soft.
    original, optimized = classifier(weight), classifier(weight * 0.05)
    report = evaluate(original, optimized, Dataset(x, None, None, "test"), latency=False)

    logits_a, logits_b = x @ weight + OFFSET, x @ (weight * 0.05) + OFFSET
    assert report.agreement == 1.0
    assert report.sqnr_on == "the logits before Softmax"
    assert math.isclose(report.sqnr_db, sqnr(logits_a, logits_b), rel_tol=1e-4)
    assert report.sqnr_db > 15
    assert sqnr(softmax(logits_a), softmax(logits_b)) < 3  # what the probabilities' SQNR would read
    assert report.to_dict()["sqnr_on"] == "the logits before Softmax"


def test_other_outputs_are_measured_as_they_are():
    weight = np.random.default_rng(1).normal(0, 1, (FEATURES, CLASSES)).astype(np.float32)
    model = classifier(weight, last="Relu", reshape_after=False)
    assert probability_inputs(model) == {}
    assert plan_measured_outputs(model, model).description == "the outputs"
    x = np.ones((4, FEATURES), np.float32)
    assert evaluate(model, model, Dataset(x, None, None, "t"), latency=False).sqnr_on == "the outputs"


def test_sigmoid_outputs_are_traced_too():
    weight = np.eye(FEATURES, CLASSES, dtype=np.float32)
    model = classifier(weight, last="Sigmoid")
    assert probability_inputs(model) == {0: ("logits", "Sigmoid")}
    plan = plan_measured_outputs(model, model)
    assert plan.description == "the logits before Sigmoid" and plan.extra["original"] == ("logits",)
