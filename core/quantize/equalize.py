"""Cross-layer equalization (CLE) of an ONNX model: per-channel weight ranges made alike across conv pairs.

Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization and Bias Correction": for two
convolutions with a positively homogeneous activation between them (f(x / s) = f(x) / s for s > 0: ReLU,
LeakyReLU, PReLU, or none), dividing output channel i of the first (weights and bias) by s_i and
multiplying input channel i of the second by s_i leaves the network's function unchanged. With
s_i = sqrt(r1_i / r2_i) (r = the channel's largest absolute weight) both channels end with the range
sqrt(r1_i * r2_i), so one quantization scale fits all channels of a tensor far better. This matters most
for depthwise convolutions, whose channels' ranges spread over orders of magnitude once BatchNorm is
folded into them; chains conv → depthwise → conv are equalized pair by pair, a few sweeps over the model.

Written here because no maintained library does it on ONNX graphs: onnxruntime.quantization has no
equalization, and AIMET and NNCF implement it for torch and OpenVINO models only.

ReLU6 (Clip to [0, 6]) is not positively homogeneous, so pairs across it are left alone unless the caller
opts in to `relu6_to_relu`, which replaces those Clips by ReLU as the paper does for MobileNetV2; that
changes the float function wherever an activation exceeded 6. BatchNormalization must already be folded
(the quantizer's pre-processing does it); a BatchNormalization between two convs simply ends a chain.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

# Activations with f(x / s) = f(x) / s for every s > 0: equalization can cross them.
HOMOGENEOUS_ACTIVATIONS = frozenset({"Relu", "LeakyRelu", "PRelu"})
DEFAULT_SWEEPS = 4  # the paper's pairwise scheme converges in a few sweeps; more changed < 1e-3 here
_CONVERGED = 1e-3  # stop sweeping when no scale differs from 1 by more than this (in log terms)
_TINY = 1e-12  # a channel whose weights are all below this is left unscaled


@dataclass(frozen=True)
class EqualizeResult:
    model: onnx.ModelProto
    pairs: int  # conv pairs equalized
    notes: tuple[str, ...]
    spread_before: float  # mean over the pairs' convs of max/min per-channel range (1 = all alike)
    spread_after: float


@dataclass(frozen=True)
class _Pair:
    first: onnx.NodeProto
    second: onnx.NodeProto
    clip: onnx.NodeProto | None  # a ReLU6 Clip between them, to become a ReLU


def equalize_model(
    model: onnx.ModelProto, *, relu6_to_relu: bool = False, sweeps: int = DEFAULT_SWEEPS
) -> EqualizeResult:
    """An equalized copy of `model` (the input is not changed) and what was done."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    graph = work.graph
    weights = {tensor.name: tensor for tensor in graph.initializer}
    pairs, across_clip = _find_pairs(graph, weights, relu6_to_relu)
    if not pairs:
        return EqualizeResult(work, 0, _notes(0, 0, across_clip, 1.0, 1.0), 1.0, 1.0)
    arrays = {name: numpy_helper.to_array(weights[name]).astype(np.float64) for name in _tensors(pairs)}
    before = _spread(pairs, arrays)
    for _ in range(sweeps):
        largest = max(_equalize_pair(pair, arrays) for pair in pairs)
        if largest < _CONVERGED:
            break
    after = _spread(pairs, arrays)
    for name, values in arrays.items():
        weights[name].CopyFrom(numpy_helper.from_array(values.astype(np.float32), name))
    replaced = 0
    for clip in {id(p.clip): p.clip for p in pairs if p.clip is not None}.values():
        _make_relu(clip)
        replaced += 1
    notes = _notes(len(pairs), replaced, across_clip, before, after)
    return EqualizeResult(work, len(pairs), notes, before, after)


def _find_pairs(
    graph: onnx.GraphProto, weights: dict[str, onnx.TensorProto], relu6_to_relu: bool
) -> tuple[list[_Pair], int]:
    """Conv pairs that may be equalized, in graph order, and how many were skipped for a ReLU6 between."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {value.name for value in graph.output}
    uses = {name: len(nodes) for name, nodes in consumers.items()}
    pairs, across_clip = [], 0
    for node in graph.node:
        if not _equalizable_conv(node, weights, uses):
            continue
        tensor, clip, relu6 = node.output[0], None, False
        following = _only_consumer(tensor, consumers, outputs)
        if following is not None and following.op_type in HOMOGENEOUS_ACTIVATIONS | {"Clip"}:
            if following.op_type == "Clip":
                if not _is_relu6(following, weights):
                    continue  # another clip range: never equalized across
                clip, relu6 = following, True
            tensor = following.output[0]
            following = _only_consumer(tensor, consumers, outputs)
        if following is None or not _equalizable_conv(following, weights, uses):
            continue
        if following.input[0] != tensor or _channels(node, weights) != _in_channels(following, weights):
            continue
        if relu6 and not relu6_to_relu:
            across_clip += 1
        else:
            pairs.append(_Pair(node, following, clip))
    return pairs, across_clip


def _equalizable_conv(node: onnx.NodeProto, weights: dict[str, onnx.TensorProto], uses: dict) -> bool:
    """A plain Conv whose weight (and bias) are initializers used by this node alone."""
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or len(node.input) < 2:
        return False
    params = [name for name in node.input[1:3] if name]
    return (
        all(name in weights and uses.get(name) == 1 for name in params)
        and len(weights[node.input[1]].dims) >= 3
    )


def _only_consumer(
    tensor: str, consumers: dict[str, list[onnx.NodeProto]], outputs: set[str]
) -> onnx.NodeProto | None:
    """The one node reading `tensor`; None when several do or the graph outputs it (rescaling would show)."""
    readers = consumers.get(tensor, [])
    return readers[0] if len(readers) == 1 and tensor not in outputs else None


def _is_relu6(node: onnx.NodeProto, weights: dict[str, onnx.TensorProto]) -> bool:
    """A Clip to [0, 6], given as inputs (opset >= 11) or attributes (older)."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    low, high = attrs.get("min"), attrs.get("max")
    for index, name in ((1, "min"), (2, "max")):
        if len(node.input) > index and node.input[index]:
            if node.input[index] not in weights:
                return False
            value = float(numpy_helper.to_array(weights[node.input[index]]))
            low, high = (value, high) if name == "min" else (low, value)
    return low is not None and high is not None and float(low) == 0.0 and float(high) == 6.0


def _make_relu(node: onnx.NodeProto) -> None:
    data = node.input[0]
    del node.input[:]
    node.input.append(data)
    del node.attribute[:]
    node.op_type = "Relu"


def _group(node: onnx.NodeProto) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "group"), 1)


def _channels(node: onnx.NodeProto, weights: dict[str, onnx.TensorProto]) -> int:
    return int(weights[node.input[1]].dims[0])


def _in_channels(node: onnx.NodeProto, weights: dict[str, onnx.TensorProto]) -> int:
    return int(weights[node.input[1]].dims[1]) * _group(node)


def _tensors(pairs: list[_Pair]) -> set[str]:
    names: set[str] = set()
    for pair in pairs:
        for node in (pair.first, pair.second):
            names.update(name for name in node.input[1:3] if name)
    return names


def _grouped(node: onnx.NodeProto, weight: np.ndarray) -> np.ndarray:
    """A view of a conv weight as (groups, out per group, in per group, kernel elements).

    Group g reads input channels g*cg .. (g+1)*cg - 1 and writes output channels g*og .. (g+1)*og - 1;
    a depthwise conv is the case cg = 1, a plain conv the case of one group. Input channel g*cg + k is
    then index (g, k) of the view's axes 0 and 2.
    """
    groups = _group(node)
    return weight.reshape(groups, weight.shape[0] // groups, weight.shape[1], -1)


def _out_ranges(weight: np.ndarray) -> np.ndarray:
    return np.abs(weight.reshape(weight.shape[0], -1)).max(axis=1)


def _in_ranges(node: onnx.NodeProto, weight: np.ndarray) -> np.ndarray:
    return np.abs(_grouped(node, weight)).max(axis=(1, 3)).reshape(-1)


def _equalize_pair(pair: _Pair, arrays: dict[str, np.ndarray]) -> float:
    """Rescale one pair in place; returns the largest |log s_i| applied (0 when already equal)."""
    first_w, second_w = arrays[pair.first.input[1]], arrays[pair.second.input[1]]
    r1, r2 = _out_ranges(first_w), _in_ranges(pair.second, second_w)
    usable = (r1 > _TINY) & (r2 > _TINY)
    scale = np.ones_like(r1)
    scale[usable] = np.sqrt(r1[usable] / r2[usable])
    shape = (-1,) + (1,) * (first_w.ndim - 1)
    first_w /= scale.reshape(shape)
    if len(pair.first.input) > 2 and pair.first.input[2]:
        arrays[pair.first.input[2]] /= scale
    grouped = _grouped(pair.second, second_w)  # a view: scaling it scales the weight
    grouped *= scale.reshape(grouped.shape[0], 1, grouped.shape[2], 1)
    return float(np.abs(np.log(scale)).max())


def _spread(pairs: list[_Pair], arrays: dict[str, np.ndarray]) -> float:
    """Mean over the convs in the pairs of (largest / smallest non-zero per-output-channel range)."""
    ratios = []
    for name in dict.fromkeys(n.input[1] for p in pairs for n in (p.first, p.second)):
        ranges = _out_ranges(arrays[name])
        ranges = ranges[ranges > _TINY]
        if len(ranges):
            ratios.append(float(ranges.max() / ranges.min()))
    return float(np.mean(ratios)) if ratios else 1.0


def _notes(pairs: int, replaced: int, across_clip: int, before: float, after: float) -> tuple[str, ...]:
    notes = []
    if pairs:
        notes.append(
            f"Cross-layer equalization rescaled {pairs} conv pairs: per-channel weight ranges spread "
            f"{before:.1f}x on average before, {after:.1f}x after."
        )
    else:
        notes.append("Cross-layer equalization found no conv pair it could rescale.")
    if replaced:
        notes.append(
            f"Replaced {replaced} ReLU6 (Clip 0..6) by ReLU so equalization could cross them; "
            "the float model changes wherever an activation exceeded 6."
        )
    if across_clip:
        notes.append(
            f"{across_clip} conv pairs across a ReLU6 were not equalized (ReLU6 is not scale-invariant); "
            "set ptq.relu6_to_relu to replace them by ReLU."
        )
    return tuple(notes)
