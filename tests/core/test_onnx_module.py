"""OnnxModule on float models: ONNX graphs run by PyTorch agree with onnxruntime (tiny models op by op,
the demo, a MobileNetV2 and a ResNet-18), training changes exactly the initializers, `write_back` gives a
model onnxruntime runs with the module's values, and what PyTorch cannot run is refused up front."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from onnx_test_models import (
    DEMO,
    TINY_MODELS,
    arrays,
    export,
    forward,
    graph_model,
    hand_qdq_model,
    init,
    node,
    weights,
)

from slimscope.core.errors import TrainingError
from slimscope.core.train.onnx_module import to_torch
from slimscope.core.train.onnx_ops import OPS


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    import onnx_test_models

    return onnx_test_models.digits()


@pytest.mark.parametrize("build", TINY_MODELS, ids=lambda b: b.__name__)
@pytest.mark.parametrize("batch", [1, 5])
def test_tiny_float_models_match_onnxruntime(build, batch, run_onnx):
    model, shape = build()
    module = to_torch(model).eval()
    x = np.random.default_rng(batch).standard_normal((batch, *shape)).astype(np.float32)
    expected = run_onnx(model, {"x": x})[0]
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_every_supported_op_is_compared_with_onnxruntime():
    """The tiny models (and the QDQ one) use every op in the registry, so each is checked against
    onnxruntime somewhere; an op added without a model here fails this test."""
    used = {n.op_type for build in TINY_MODELS for n in build()[0].graph.node}
    used |= {n.op_type for n in hand_qdq_model().graph.node}
    assert set(OPS) - used == set()


# --- real networks -----------------------------------------------------------------------------------


def test_demo_model_matches_onnxruntime(digits, run_onnx):
    model = onnx.load(DEMO / "digits_net.onnx")
    x = digits[0][:64]
    with torch.no_grad():
        got = to_torch(model).eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, run_onnx(model, {"input": x})[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("network", ["MobileNetV2", "ResNet18"])
def test_benchmark_networks_match_onnxruntime(network, run_onnx):
    import networks

    torch.manual_seed(0)
    net = getattr(networks, network)(num_classes=10)
    with torch.no_grad():  # weights that give the logits a visible size, and BN statistics that matter
        for module in net.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0, 0.5)
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    # ResNet-18 keeps its BatchNormalization nodes (no folding); MobileNetV2 gets them folded into the convs.
    model = export(net, 32, do_constant_folding=network == "MobileNetV2")
    x = np.random.default_rng(3).standard_normal((3, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        got = to_torch(model).eval()(torch.from_numpy(x)).numpy()
    expected = run_onnx(model, {"input": x})[0]
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_float_model_trained_one_step_writes_back_what_it_computes(digits, run_onnx):
    model = onnx.load(DEMO / "digits_net.onnx")
    module = to_torch(model)
    x, y = (torch.from_numpy(a[:16]) for a in digits)
    optimizer = torch.optim.SGD(module.trainable.values(), lr=0.1)
    module.train()
    torch.nn.functional.cross_entropy(module(x), y).backward()
    optimizer.step()
    written = module.write_back()
    onnx.checker.check_model(written, full_check=True)
    assert list(written.graph.node) == list(model.graph.node)  # the graph itself is untouched
    changed = [
        name for name, value in arrays(model).items() if not np.array_equal(arrays(written)[name], value)
    ]
    assert set(changed) == set(module.trainable) and "classifier.weight" in changed
    x_eval = digits[0][:32]
    np.testing.assert_allclose(forward(module, x_eval), run_onnx(written, {"input": x_eval})[0], atol=1e-4)


# --- batch normalization, refusals, batch limits -----------------------------------------------------


def test_batch_norm_updates_running_stats_in_training_and_uses_them_in_evaluation(run_onnx):
    nodes = [node("BatchNormalization", ["x", "g", "b", "mean", "var"], ["y"], momentum=0.8)]
    inits = [init("g", [1.0, 2.0]), init("b", [0.0, 1.0]), init("mean", [0.0, 0.0]), init("var", [1.0, 1.0])]
    model = graph_model(nodes, inits, (2, 3, 3))
    module = to_torch(model)
    assert set(module.trainable) == {"g", "b"}
    x = torch.randn(4, 2, 3, 3) * 3 + 5
    module.train()
    out = module(x)
    batch_mean = x.mean(dim=(0, 2, 3))
    torch.testing.assert_close(
        out.mean(dim=(0, 2, 3)), torch.tensor([0.0, 1.0]), atol=1e-5, rtol=0
    )  # batch stats
    torch.testing.assert_close(module.tensor("mean"), 0.2 * batch_mean)  # ONNX momentum 0.8 keeps 80 %
    assert not torch.equal(module.tensor("var"), torch.ones(2))
    written = module.write_back()
    np.testing.assert_allclose(arrays(written)["mean"], module.tensor("mean").numpy())
    x_eval = np.random.default_rng(1).standard_normal((2, 2, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(forward(module, x_eval), run_onnx(written, {"x": x_eval})[0], atol=1e-5)


def test_running_statistics_the_exporter_merged_with_a_bias_stay_apart(run_onnx):
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(144, 3),
    )
    model = export(net, 8, do_constant_folding=False)
    batch_norm = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    assert (
        producers.get(batch_norm.input[3]) == "Identity"
    )  # a fresh BN's zero mean, merged with its zero bias
    module = to_torch(model)
    train = torch.randn(8, 3, 8, 8) * 2 + 1
    optimizer = torch.optim.SGD(module.trainable.values(), lr=0.1)
    module.train()
    module(train).pow(2).mean().backward()
    optimizer.step()
    written = module.write_back()
    onnx.checker.check_model(written, full_check=True)
    x = np.random.default_rng(2).standard_normal((4, 3, 8, 8)).astype(np.float32) * 2 + 1
    np.testing.assert_allclose(forward(module, x), run_onnx(written, {"input": x})[0], atol=1e-4)
    running_mean = arrays(written)[
        next(n for n in written.graph.node if n.op_type == "BatchNormalization").input[3]
    ]
    np.testing.assert_allclose(
        running_mean, 0.1 * net[0](train).mean(dim=(0, 2, 3)).detach().numpy(), atol=1e-5
    )


def test_unsupported_ops_are_named_before_anything_runs():
    nodes = [
        node("Relu", ["x"], ["r"]),
        helper.make_node("MyOp", ["r"], ["m"], name="custom", domain="com.example"),
        node("NonMaxSuppression", ["m", "r"], ["y"]),
    ]
    model = graph_model(nodes, [], (4,))
    with pytest.raises(
        TrainingError, match=r"'com\.example\.MyOp' \(node 'custom'\).*'NonMaxSuppression'.*supported: "
    ):
        to_torch(model)


def test_models_with_two_inputs_or_control_flow_are_refused():
    two = helper.make_model(
        helper.make_graph(
            [node("Add", ["a", "b"], ["y"])],
            "two",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2]) for n in ("a", "b")],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        ),
        opset_imports=[helper.make_opsetid("", 13)],
    )
    with pytest.raises(TrainingError, match="one data input; this one has 2"):
        to_torch(two)
    branch = helper.make_graph(
        [node("Identity", ["x"], ["z"])],
        "b",
        [],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
    )
    nodes = [node("ReduceSum", ["x"], ["s"]), node("Greater", ["s", "zero"], ["c"]),
             node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)]  # fmt: skip
    with pytest.raises(TrainingError, match="control flow"):
        to_torch(graph_model(nodes, [init("zero", 0.0)], (2,)))


def test_a_graph_fixed_at_batch_one_says_so(run_onnx):
    nodes = [node("Reshape", ["x", "shape"], ["r"]), node("MatMul", ["r", "w"], ["y"])]
    model = graph_model(nodes, [init("shape", [1, -1], np.int64), weights("w", 6, 2)], (2, 3))
    module = to_torch(model).eval()
    one = np.ones((1, 2, 3), np.float32)
    np.testing.assert_allclose(forward(module, one), run_onnx(model, {"x": one})[0], atol=1e-5)
    with pytest.raises(TrainingError, match="only takes one sample at a time"):
        module(torch.ones(5, 2, 3))
    # A constant reshaped to [1, C, 1, 1] is not the batch: any batch size runs.
    nodes = [node("Reshape", ["gain", "shape"], ["g"]), node("Mul", ["x", "g"], ["y"])]
    model = graph_model(nodes, [init("gain", [2.0, -1.0]), init("shape", [1, 2, 1, 1], np.int64)], (2, 3, 3))
    five = np.random.default_rng(0).standard_normal((5, 2, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(forward(to_torch(model), five), run_onnx(model, {"x": five})[0])


def test_parameters_have_safe_names_and_onnx_names_are_kept():
    model = onnx.load(DEMO / "digits_net.onnx")
    module = to_torch(model)
    names = {name for name, _ in module.named_parameters()}
    assert names == {f"p{i}" for i in range(len(names))}
    assert set(module.trainable) == {t.name for t in model.graph.initializer}  # all weights and biases here
    assert module.tensor("onnx::Conv_155") is module.trainable["onnx::Conv_155"]
    with pytest.raises(KeyError):
        module.tensor("nothing")
