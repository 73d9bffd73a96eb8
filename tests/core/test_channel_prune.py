"""Structured channel pruning on ONNX graphs: groups, plan, and the rewrite that really removes channels.

Each structure is a small torch module exported to ONNX (BatchNorm folded by the exporter) or an
onnx.helper graph (BatchNorm kept). The channels the plan will remove are made exact zeros beforehand
— weight rows, bias, BatchNorm beta — so that removing them must leave the outputs unchanged: that
proves every consumer was sliced at the right positions.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from torch.nn import functional as F

from slimscope.core.layers import find_layers
from slimscope.core.loading import load_model
from slimscope.core.prune.channel_apply import apply_channel_pruning
from slimscope.core.prune.channel_groups import find_channel_groups
from slimscope.core.prune.channel_plan import channels_to_keep, plan_channel_pruning
from slimscope.core.recipe import PruneSpec

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo" / "digits_net.onnx"
HALF = PruneSpec("channel", sparsity=0.5)
EVEN, ODD = list(range(0, 64, 2)), list(range(1, 64, 2))


@dataclass
class Case:
    model: onnx.ModelProto
    removed: dict[str, list[int]]  # requested layer (name fragment) → the channels zeroed beforehand
    shapes: dict[str, tuple]  # layer (name fragment) → its weight shape after pruning
    input_shape: tuple = (1, 3, 8, 8)
    groups: dict[str, int] = field(default_factory=dict)  # depthwise layer fragment → expected `group`


def export(module: nn.Module, path: Path, input_shape: tuple, dynamic: bool = False) -> onnx.ModelProto:
    axes = {"x": {0: "n"}} if dynamic else None
    # The exporter's chatter is not under test: the TorchScript exporter is chosen on purpose (it warns
    # it is legacy), and InstanceNorm without running stats warns that it exports as computed per input.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.randn(*input_shape),), path, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["y"], dynamic_axes=axes)  # fmt: skip
    return load_model(path).model


@torch.no_grad()
def zero(channels: list[int], *modules: nn.Module) -> None:
    """Make output channels exactly 0: weight rows and bias of a conv/linear, gamma and beta of a BN."""
    for module in modules:
        module.weight[channels] = 0
        if module.bias is not None:
            module.bias[channels] = 0


def named(names, fragment: str) -> str:
    found = [name for name in names if fragment in name]
    assert len(found) == 1, (fragment, found)
    return found[0]


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def conv_bn(cin: int, cout: int, **kwargs) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, bias=False, **kwargs), nn.BatchNorm2d(cout), nn.ReLU())


# --- the structures --------------------------------------------------------------------------------


def conv_chain(tmp_path: Path) -> Case:
    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(32, 8, 1))  # fmt: skip
    zero(ODD[:16], net[0])
    zero(EVEN[:16], net[2])
    model = export(net, tmp_path / "chain.onnx", (1, 3, 8, 8))
    return Case(
        model,
        {"/0/": ODD[:16], "/2/": EVEN[:16]},
        {"/0/": (16, 3, 3, 3), "/2/": (16, 16, 3, 3), "/4/": (8, 16, 1, 1)},
    )


def conv_bn_relu(tmp_path: Path) -> Case:
    """BatchNormalization left in the graph (as an unfused export or an old model would have it)."""
    rng = np.random.default_rng(0)
    arrays = {
        "w1": rng.standard_normal((32, 3, 3, 3)), "b1": rng.standard_normal(32),
        "gamma": rng.uniform(0.5, 2, 32), "beta": rng.standard_normal(32),
        "mean": rng.standard_normal(32), "var": rng.uniform(0.5, 2, 32), "w2": rng.standard_normal((16, 32, 1, 1)),
    }  # fmt: skip
    for key in ("w1", "b1", "beta", "mean"):  # gamma stays: (0 - 0) * gamma is still 0
        arrays[key][ODD[:16]] = 0
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "gamma", "beta", "mean", "var"], ["n1"], name="bn"),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu"),
        helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2"),
    ]
    model = _helper_model(nodes, arrays)
    return Case(model, {"conv1": ODD[:16]}, {"conv1": (16, 3, 3, 3), "conv2": (16, 16, 1, 1)})


class InvertedResidual(nn.Module):
    """MobileNetV2 style: 1x1 expand → depthwise 3x3 → 1x1 project, added to its input."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 32, kernel_size=3, padding=1)
        self.expand = conv_bn(32, 64, kernel_size=1)
        self.dw = conv_bn(64, 64, kernel_size=3, padding=1, groups=64)
        self.project = nn.Sequential(nn.Conv2d(64, 32, 1, bias=False), nn.BatchNorm2d(32))
        self.head = nn.Conv2d(32, 48, 1)
        self.fc = nn.Linear(48, 10)

    def forward(self, x):
        s = self.stem(x)
        y = s + self.project(self.dw(self.expand(s)))
        return self.fc(F.adaptive_avg_pool2d(F.relu6(self.head(y)), 1).flatten(1))


def depthwise_separable(tmp_path: Path) -> Case:
    net = InvertedResidual()
    zero(EVEN[:16], net.stem[0], net.stem[1], net.project[0], net.project[1])  # coupled through the Add
    zero(ODD, net.expand[0], net.expand[1], net.dw[0], net.dw[1])  # the depthwise conv follows the expansion
    model = export(net, tmp_path / "mbv2.onnx", (1, 3, 8, 8))
    shapes = {"stem.0": (16, 3, 3, 3), "expand.0": (32, 16, 1, 1), "dw.0": (32, 1, 3, 3),
              "project.0": (16, 32, 1, 1), "head": (48, 16, 1, 1), "fc": (10, 48)}  # fmt: skip
    return Case(model, {"stem.0": EVEN[:16], "expand.0": ODD}, shapes, groups={"dw.0": 32})


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.down is None else self.down(x)))


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 32, kernel_size=3, padding=1)
        self.block1, self.block2 = BasicBlock(32, 32, 1), BasicBlock(32, 64, 2)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.block2(self.block1(self.stem(x))), 1).flatten(1))


def residual(tmp_path: Path, zeroed: bool = True) -> Case:
    torch.manual_seed(0)
    net = TinyResNet()
    if zeroed:
        zero(ODD[:16], net.stem[0], net.stem[1], net.block1.conv2, net.block1.bn2)  # identity shortcut
        zero(EVEN[:16], net.block1.conv1, net.block1.bn1)
        zero(EVEN, net.block2.conv2, net.block2.bn2, net.block2.down[0], net.block2.down[1])  # 1x1 shortcut
    model = export(net, tmp_path / "resnet.onnx", (1, 3, 8, 8))
    shapes = {"stem.0": (16, 3, 3, 3), "block1/conv1": (16, 16, 3, 3), "block1/conv2": (16, 16, 3, 3),
              "block2/conv1": (64, 16, 3, 3), "block2/conv2": (32, 64, 3, 3), "down.0": (32, 16, 1, 1),
              "fc": (10, 32)}  # fmt: skip
    return Case(model, {"stem.0": ODD[:16], "block1/conv1": EVEN[:16], "block2/down": EVEN}, shapes)


class Branches(nn.Module):
    """Two branches and the input itself concatenated: each part lands at its own offset."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Conv2d(3, 32, 3, padding=1), nn.Conv2d(3, 64, 1), nn.Conv2d(99, 16, 1)

    def forward(self, x):
        return self.head(torch.cat([F.relu(self.a(x)), F.relu(self.b(x)), x], dim=1))


def concat(tmp_path: Path) -> Case:
    net = Branches()
    zero(EVEN[:16], net.a)
    zero(ODD, net.b)
    model = export(net, tmp_path / "concat.onnx", (1, 3, 8, 8))
    return Case(
        model,
        {"/a/": EVEN[:16], "/b/": ODD},
        {"/a/": (16, 3, 3, 3), "/b/": (32, 3, 1, 1), "head": (16, 51, 1, 1)},
    )


class Classifier(nn.Module):
    def __init__(self, flatten: str):
        super().__init__()
        self.flatten = flatten
        self.conv, self.fc = nn.Conv2d(3, 32, 3, padding=1), nn.Linear(32 * 4 * 4, 10)

    def forward(self, x):
        y = F.relu(self.conv(x))
        return self.fc(y.flatten(1) if self.flatten == "flatten" else y.view(y.size(0), -1))


def classifier(tmp_path: Path, flatten: str) -> Case:
    net = Classifier(flatten)
    zero(ODD[:16], net.conv)
    model = export(net, tmp_path / "fc.onnx", (1, 3, 4, 4), dynamic=flatten == "view-dynamic")
    if flatten == "view-explicit":  # a Reshape target of [1, 512] instead of [1, -1]
        (target,) = [t for t in model.graph.initializer if t.dims == [2] and t.data_type == TensorProto.INT64]
        target.CopyFrom(numpy_helper.from_array(np.array([1, 512], np.int64), target.name))
    batch = 3 if flatten == "view-dynamic" else 1
    return Case(
        model, {"conv": ODD[:16]}, {"conv": (16, 3, 3, 3), "fc": (10, 256)}, input_shape=(batch, 3, 4, 4)
    )


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 8)

    def forward(self, x):  # [N, tokens, features]: exported as MatMul + Add
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def mlp(tmp_path: Path) -> Case:
    net = Mlp()
    zero(ODD[:16], net.fc1)
    zero(EVEN[:16], net.fc2)
    model = export(net, tmp_path / "mlp.onnx", (1, 4, 16))
    return Case(
        model,
        {"fc1": ODD[:16], "fc2": EVEN[:16]},
        {"fc1": (16, 16), "fc2": (16, 16), "fc3": (16, 8)},
        (1, 4, 16),
    )


class SqueezeExcite(nn.Module):
    """Channel attention: a per-channel gate multiplies the features, so gate and features are coupled."""

    def __init__(self):
        super().__init__()
        self.conv, self.reduce, self.expand = (
            nn.Conv2d(3, 32, 3, padding=1),
            nn.Conv2d(32, 8, 1),
            nn.Conv2d(8, 32, 1),
        )
        self.head, self.fc = nn.Conv2d(32, 16, 1), nn.Linear(16, 5)

    def forward(self, x):
        y = F.hardswish(self.conv(x))
        gate = torch.sigmoid(self.expand(F.relu(self.reduce(y.mean((2, 3), keepdim=True)))))
        return self.fc(self.head(y * gate).mean((2, 3)))


def squeeze_excite(tmp_path: Path) -> Case:
    net = SqueezeExcite()
    zero(ODD[:16], net.conv, net.expand)  # hardswish(0) * sigmoid(0) is 0
    model = export(net, tmp_path / "se.onnx", (1, 3, 8, 8))
    shapes = {
        "/conv/": (16, 3, 3, 3),
        "expand": (16, 8, 1, 1),
        "reduce": (8, 16, 1, 1),
        "head": (16, 16, 1, 1),
    }
    return Case(model, {"/conv/": ODD[:16]}, shapes)


class Decoder(nn.Module):
    """U-Net style: pooling down, transposed conv and resize up, a skip Concat, padding, InstanceNorm."""

    def __init__(self):
        super().__init__()
        self.d1, self.d2 = nn.Conv2d(3, 32, 3, padding=1), nn.Conv2d(32, 64, 3, padding=1)
        self.up, self.side = nn.ConvTranspose2d(64, 32, 2, stride=2), nn.Conv2d(64, 32, 1)
        self.u2, self.norm, self.out = (
            nn.Conv2d(64, 32, 3, padding=1),
            nn.InstanceNorm2d(32, affine=True),
            nn.Conv2d(32, 2, 1),
        )

    def forward(self, x):
        a = F.leaky_relu(self.d1(x))
        b = F.relu(self.d2(F.max_pool2d(a, 2)))
        u = F.relu(self.up(b)) + F.interpolate(self.side(b), scale_factor=2.0)
        return self.out(F.pad(self.norm(self.u2(torch.cat([u, a], 1))), (1, 1, 1, 1)))


def decoder(tmp_path: Path) -> Case:
    net = Decoder()
    zero(EVEN[:16], net.d1)
    zero(ODD, net.d2)
    zero(ODD[:16], net.side)
    with torch.no_grad():  # a transposed conv's output channels are its weight's axis 1
        net.up.weight[:, ODD[:16]] = 0
        net.up.bias[ODD[:16]] = 0
    zero(EVEN[:16], net.u2, net.norm)
    model = export(net, tmp_path / "decoder.onnx", (1, 3, 8, 8))
    shapes = {"d1": (16, 3, 3, 3), "d2": (32, 16, 3, 3), "/up/": (32, 16, 2, 2), "side": (16, 32, 1, 1),
              "u2": (16, 32, 3, 3), "/out/": (2, 16, 1, 1)}  # fmt: skip
    return Case(model, {"d1": EVEN[:16], "d2": ODD, "/up/": ODD[:16], "u2": EVEN[:16]}, shapes)


def _helper_model(nodes, arrays, extra_inputs=(), outputs=(("y", 16),)) -> onnx.ModelProto:
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, c, 8, 8])
        for n, c in [("x", 3), *extra_inputs]
    ]
    graph = helper.make_graph(
        nodes, "g", inputs, [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, c, 8, 8]) for name, c in outputs],
        [numpy_helper.from_array(v if v.dtype == np.int64 else v.astype(np.float32), k) for k, v in arrays.items()],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


STRUCTURES = {
    "conv chain": conv_chain,
    "conv+bn+relu": conv_bn_relu,
    "depthwise separable": depthwise_separable,
    "residual": residual,
    "concat": concat,
    "flatten+gemm": lambda p: classifier(p, "flatten"),
    "view+gemm": lambda p: classifier(p, "view-static"),
    "view+gemm dynamic batch": lambda p: classifier(p, "view-dynamic"),
    "reshape [1, 512]+gemm": lambda p: classifier(p, "view-explicit"),
    "matmul mlp": mlp,
    "squeeze-excite": squeeze_excite,
    "decoder": decoder,
}


# --- tests -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("structure", STRUCTURES)
def test_pruning_removes_the_zeroed_channels_and_keeps_the_outputs(structure, tmp_path):
    case = STRUCTURES[structure](tmp_path)
    original = onnx.ModelProto()
    original.CopyFrom(case.model)
    names = [layer.name for layer in find_layers(case.model, {})]
    requested = {named(names, fragment): HALF for fragment in case.removed}

    plan = plan_channel_pruning(case.model, find_channel_groups(case.model), requested)
    pruned = apply_channel_pruning(case.model, plan)

    for fragment, zeroed in case.removed.items():  # the plan removes exactly the zeroed channels
        (group_plan,) = [p for p in plan.groups if named(names, fragment) in p.group.producers]
        assert group_plan.removed == tuple(zeroed)
        assert len(group_plan.keep) % 16 == 0
    onnx.checker.check_model(pruned, full_check=True)
    shapes = {layer.name: layer.weight_shape for layer in find_layers(pruned, {})}
    assert {fragment: shapes[named(names, fragment)] for fragment in case.shapes} == case.shapes
    for fragment, group in case.groups.items():
        node = next(n for n in pruned.graph.node if n.name == named(names, fragment))
        assert helper.get_attribute_value(next(a for a in node.attribute if a.name == "group")) == group
    x = np.random.default_rng(1).standard_normal(case.input_shape).astype(np.float32)
    np.testing.assert_allclose(run(pruned, x), run(case.model, x), atol=1e-5, rtol=0)
    assert case.model == original  # the input model is left as it was


def test_coupled_residual_layers_drop_identical_indices(tmp_path):
    model = residual(tmp_path, zeroed=False).model
    groups = find_channel_groups(model)
    names = [layer.name for layer in find_layers(model, {})]
    stem, conv2 = named(names, "stem.0"), named(names, "block1/conv2")
    (group,) = [g for g in groups if stem in g.producers]
    assert set(group.producers) == {stem, conv2}
    consumers = {named(names, f) for f in ("block1/conv1", "block2/conv1", "block2/down")}
    assert set(group.consumers) == consumers
    down_group = next(g for g in groups if named(names, "block2/down") in g.producers)
    assert set(down_group.producers) == {named(names, "block2/down"), named(names, "block2/conv2")}

    plan = plan_channel_pruning(model, groups, {stem: HALF})
    assert sorted(plan.dragged[stem]) == sorted({conv2} | consumers)
    keep = list(plan.keep_for(stem))
    assert plan.keep_for(conv2) == tuple(keep) and len(keep) == 16
    before = {layer.name: _weight(model, layer) for layer in find_layers(model, {})}
    pruned = apply_channel_pruning(model, plan)
    after = {layer.name: _weight(pruned, layer) for layer in find_layers(pruned, {})}
    np.testing.assert_array_equal(after[stem], before[stem][keep])
    np.testing.assert_array_equal(after[conv2], before[conv2][keep])  # its input group was not asked
    for name in consumers:
        np.testing.assert_array_equal(after[name], before[name][:, keep])


def _weight(model: onnx.ModelProto, layer) -> np.ndarray:
    return numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == layer.weight))


# Each middle part sits between conv1 (3→32) and conv2 (32→16); what stops the tracer, and why.
REFUSALS = {
    "transpose": ([helper.make_node("Transpose", ["r"], ["m"], perm=[0, 1, 3, 2])], "Transpose"),
    "softmax over channels": (
        [helper.make_node("Softmax", ["r"], ["m"], axis=1)],
        "mixes values across channels",
    ),
    "split": (
        [
            helper.make_node("Split", ["r"], ["s1", "s2"], axis=1),
            helper.make_node("Concat", ["s1", "s2"], ["m"], axis=1),
        ],
        "Split",
    ),
    "reshape to another shape": (
        [
            helper.make_node("Reshape", ["r", "flat"], ["f"]),
            helper.make_node("Reshape", ["f", "back"], ["m"]),
        ],
        "reshapes",
    ),
    "added to a graph input": ([helper.make_node("Add", ["r", "skip"], ["m"])], "channels that stay"),
    "graph output": ([helper.make_node("Identity", ["r"], ["m"])], "model output 'r'"),
    "grouped conv": (
        [helper.make_node("Conv", ["r", "wg"], ["m"], name="grouped", group=4)],
        "grouped convolution",
    ),
}


@pytest.mark.parametrize("kind", REFUSALS)
def test_channels_the_tracer_cannot_follow_stay_with_a_reason(kind):
    middle, reason = REFUSALS[kind]
    rng = np.random.default_rng(0)
    arrays = {"w1": rng.standard_normal((32, 3, 3, 3)), "w2": rng.standard_normal((16, 32, 1, 1)),
              "wg": rng.standard_normal((32, 8, 1, 1)), "flat": np.array([1, 32, 64]), "back": np.array([1, 32, 8, 8])}  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        *middle,
        helper.make_node("Conv", ["m", "w2"], ["y"], name="conv2"),
    ]
    model = _helper_model(nodes, arrays, [("skip", 32)] if kind == "added to a graph input" else (),
                          (("y", 16), ("r", 32)) if kind == "graph output" else (("y", 16),))  # fmt: skip

    groups = {name: g for g in find_channel_groups(model) for name in g.producers}
    assert not groups["conv1"].prunable and reason in groups["conv1"].reason
    assert groups["conv1"].reason.endswith(".")
    plan = plan_channel_pruning(model, list(groups.values()), {"conv1": HALF})
    assert plan.groups == () and plan.refused == {"conv1": groups["conv1"].reason}
    pruned = apply_channel_pruning(model, plan)
    assert [tuple(t.dims) for t in pruned.graph.initializer][:2] == [(32, 3, 3, 3), (16, 32, 1, 1)]


@pytest.mark.parametrize("sparsity, expected", [(0.3, {32: 16, 64: 48, 128: 96, 256: 176, 512: 352}),
                                                (0.5, {32: 16, 64: 32, 128: 64, 256: 128, 512: 256})])  # fmt: skip
def test_demo_model_prunes_and_runs(sparsity, expected):
    loaded = load_model(DEMO)
    before = loaded.model.SerializeToString()
    layers = find_layers(loaded.model, {})
    groups = find_channel_groups(loaded.model)
    plan = plan_channel_pruning(
        loaded.model, groups, {layer.name: PruneSpec("channel", sparsity) for layer in layers}
    )
    pruned = apply_channel_pruning(loaded.model, plan)

    assert loaded.model.SerializeToString() == before
    (classifier_group,) = [g for g in groups if not g.prunable]
    assert classifier_group.producers == ("/classifier/Gemm",) and "'logits'" in classifier_group.reason
    assert plan.refused == {"/classifier/Gemm": classifier_group.reason}
    assert {len(p.keep) for p in plan.groups} == {expected[p.group.channels] for p in plan.groups}
    onnx.checker.check_model(pruned, full_check=True)
    after = {layer.name: layer for layer in find_layers(pruned, {})}
    for layer in layers:
        if layer.name != "/classifier/Gemm":
            assert after[layer.name].out_channels == expected[layer.out_channels], layer.name
    assert after["/classifier/Gemm"].weight_shape == (10, expected[512])
    samples = np.load(DEMO.with_name("digits_test.npz"))["x"][:8]
    assert run(pruned, samples).shape == (len(samples), 10)


@pytest.mark.parametrize(
    "channels, sparsity, round_to, kept",
    [(32, 0.5, 16, 16), (48, 0.5, 16, 32), (24, 0.5, 16, 16), (512, 0.3, 16, 352), (32, 0.0, 16, 32),
     (100, 0.99, 16, 16), (8, 0.5, 16, 4), (3, 0.9, 16, 1), (40, 0.5, 1, 20), (5, 0.5, 16, 3)],
)  # fmt: skip
def test_channels_to_keep_rounds_to_multiples(channels, sparsity, round_to, kept):
    assert channels_to_keep(channels, sparsity, round_to) == kept


def test_importance_scorer_is_pluggable(tmp_path):
    model = conv_chain(tmp_path).model
    groups = find_channel_groups(model)
    name = named([n for g in groups for n in g.producers], "/0/")
    plan = plan_channel_pruning(model, groups, {name: HALF}, scorer=lambda weights: -np.arange(32.0))
    assert plan.keep_for(name) == tuple(range(16))  # the scorer, not the weights, decided
