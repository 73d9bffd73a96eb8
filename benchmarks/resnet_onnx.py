"""Build a ResNet-50-shaped ONNX model (25.6 M parameters, random weights) with onnx.helper alone.

torchvision does not import beside the pinned torch build here, so the architecture is written out:
stem, 3-4-6-3 bottleneck blocks, global pooling and a 1000-way classifier, BatchNorm folded into convs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class _GraphBuilder:
    def __init__(self, seed: int, sparsity: float) -> None:
        self.rng = np.random.default_rng(seed)
        self.sparsity = sparsity
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def _name(self, kind: str) -> str:
        self.count += 1
        return f"{kind}_{self.count}"

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, relu: bool = True) -> str:
        name = self._name("conv")
        w = (self.rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
        if self.sparsity:
            w[np.abs(w) < np.quantile(np.abs(w), self.sparsity)] = 0.0
        b = (self.rng.standard_normal(cout) * 0.01).astype(np.float32)
        self.inits += [
            numpy_helper.from_array(w, f"{name}.weight"),
            numpy_helper.from_array(b, f"{name}.bias"),
        ]
        pad = k // 2
        self.nodes.append(
            helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [name], name=name,
                             kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)
        )  # fmt: skip
        return self.relu(name) if relu else name

    def relu(self, x: str) -> str:
        out = self._name("relu")
        self.nodes.append(helper.make_node("Relu", [x], [out], name=out))
        return out

    def add(self, a: str, b: str) -> str:
        out = self._name("add")
        self.nodes.append(helper.make_node("Add", [a, b], [out], name=out))
        return out

    def bottleneck(self, x: str, cin: int, width: int, stride: int) -> str:
        cout = width * 4
        y = self.conv(x, cin, width, 1)
        y = self.conv(y, width, width, 3, stride)
        y = self.conv(y, width, cout, 1, relu=False)
        shortcut = self.conv(x, cin, cout, 1, stride, relu=False) if (stride != 1 or cin != cout) else x
        return self.relu(self.add(y, shortcut))


def build_resnet18(path: Path, size: int = 224, seed: int = 0) -> Path:
    """ResNet-18's layer shapes (BasicBlocks 2-2-2-2, 64→512, 1000 classes), at a given input size."""
    g = _GraphBuilder(seed, 0.0)
    stem = g.conv("input", 3, 64, 7, 2)
    g.nodes.append(
        helper.make_node("MaxPool", [stem], ["pool"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4)
    )
    x, cin = "pool", 64
    for width, stride in ((64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1)):
        y = g.conv(g.conv(x, cin, width, 3, stride), width, width, 3, relu=False)
        shortcut = g.conv(x, cin, width, 1, stride, relu=False) if (stride != 1 or cin != width) else x
        x, cin = g.relu(g.add(y, shortcut)), width
    return _finish(g, x, 512, path, size, "resnet18")


def build_resnet50(path: Path, seed: int = 0, sparsity: float = 0.0) -> Path:
    """Write the model; `sparsity` zeroes that fraction of each conv weight (smallest magnitudes)."""
    g = _GraphBuilder(seed, sparsity)
    x = g.conv("input", 3, 64, 7, 2)
    g.nodes.append(
        helper.make_node("MaxPool", [x], ["pool"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4)
    )
    x, cin = "pool", 64
    for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for i in range(blocks):
            x = g.bottleneck(x, cin, width, stride if i == 0 else 1)
            cin = width * 4
    return _finish(g, x, 2048, path, 224, "resnet50")


def _finish(g: _GraphBuilder, x: str, features: int, path: Path, size: int, name: str) -> Path:
    """Global pooling, a 1000-way classifier, and the model written to `path`."""
    g.nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    g.nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    w = (g.rng.standard_normal((1000, features)) * 0.02).astype(np.float32)
    g.inits += [
        numpy_helper.from_array(w, "fc.weight"),
        numpy_helper.from_array(np.zeros(1000, np.float32), "fc.bias"),
    ]
    g.nodes.append(
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1)
    )
    graph = helper.make_graph(
        g.nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])],
        g.inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
