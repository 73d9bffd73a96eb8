"""Empirical bias correction of a QDQ model: each quantized layer's mean output error moved into its bias.

Nagel et al. 2019 ("Data-Free Quantization Through Weight Equalization and Bias Correction"), empirical
variant: quantization shifts the mean of a layer's output per channel (rounding errors of its weights do
not average out over a channel), and every later layer inherits the shift. Running the float model and the
quantized model on the calibration data, E[y_quantized - y_float] per output channel is measured at each
quantized Conv/Gemm (before its activation, in both models) and subtracted from that layer's bias.

Correcting a layer changes what every later layer sees, so layers are corrected in waves of graph depth:
a wave holds the layers no other uncorrected layer feeds, each wave measured on the model with the earlier
waves' corrections in place (correcting all at once would count an inherited shift twice).

The intermediate tensors are fetched as core/evaluate/per_layer.py does (extra graph outputs appended to
the serialized model). onnxruntime's quantizer stores biases as int32 codes with scale
input_scale × weight_scale; the correction is added to those codes (resolution far below the error), and a
layer without a bias gets one in the same form, so onnxruntime still fuses it into an integer kernel.
Written here because onnxruntime.quantization has no bias correction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from slimscope.core.evaluate.sessions import session_options
from slimscope.core.tasks import Progress, Task

BIAS_CORRECTION_SAMPLES = 64  # per-channel means settle within a few batches; each wave runs them all
_CORRECTABLE = ("Conv", "Gemm")


@dataclass(frozen=True)
class BiasCorrectionResult:
    model: onnx.ModelProto
    # Per corrected layer: mean over channels of |E[quantized - float]| before and after correcting.
    shift_before: dict[str, float]
    shift_after: dict[str, float]
    notes: tuple[str, ...]


@dataclass
class _Target:
    layer: str
    float_tensor: str
    quant_tensor: str
    axis: int  # the channel axis of the output (1 for Conv, last for Gemm)
    level: int = 0


def iter_correct_bias(
    float_model: onnx.ModelProto,
    quantized: onnx.ModelProto,
    feeds: Sequence[dict[str, np.ndarray]],
    *,
    max_samples: int = BIAS_CORRECTION_SAMPLES,
) -> Task[BiasCorrectionResult]:
    """A copy of `quantized` (made from `float_model` by onnxruntime's QDQ quantizer, node names kept)
    with corrected biases; `feeds` are model inputs (the calibration runs)."""
    work = onnx.ModelProto()
    work.CopyFrom(quantized)
    runs = _first_samples(feeds, max_samples)
    targets, notes = _targets(float_model, work)
    if not targets:
        return BiasCorrectionResult(work, {}, {}, ("Bias correction found no quantized Conv or Gemm.",))
    yield Progress(0.0, "Bias correction: float activations")
    reference = _channel_means(float_model, runs, {t.float_tensor: t.axis for t in targets})
    waves = sorted({t.level for t in targets})
    before: dict[str, float] = {}
    for index, level in enumerate(waves):
        wave = [t for t in targets if t.level == level]
        measured = _channel_means(
            work, runs, {t.quant_tensor: t.axis for t in targets if index == 0 or t in wave}
        )
        for target in targets if index == 0 else []:
            before[target.layer] = _shift(measured[target.quant_tensor], reference[target.float_tensor])
        for target in wave:
            delta = measured[target.quant_tensor] - reference[target.float_tensor]
            note = _correct(work, target.layer, delta)
            if note:
                notes.append(note)
        yield Progress((index + 1) / (len(waves) + 1), f"Bias correction: wave {index + 1} of {len(waves)}")
    final = _channel_means(work, runs, {t.quant_tensor: t.axis for t in targets})
    after = {t.layer: _shift(final[t.quant_tensor], reference[t.float_tensor]) for t in targets}
    mean_before, mean_after = np.mean(list(before.values())), np.mean(list(after.values()))
    notes.insert(
        0,
        f"Bias correction adjusted {len(targets)} layers: mean per-channel output shift "
        f"{mean_before:.3g} before, {mean_after:.3g} after ({len(runs)} calibration runs).",
    )
    return BiasCorrectionResult(work, before, after, tuple(notes))


def _first_samples(feeds: Sequence[dict[str, np.ndarray]], max_samples: int) -> list[dict[str, np.ndarray]]:
    chosen, count = [], 0
    for feed in feeds:
        if count >= max_samples:
            break
        chosen.append(feed)
        count += len(next(iter(feed.values())))
    return chosen


def _targets(float_model: onnx.ModelProto, quantized: onnx.ModelProto) -> tuple[list[_Target], list[str]]:
    """Quantized Conv/Gemm nodes (weight from a DequantizeLinear) that the float model has by name, with
    their wave: how many targets lie on the longest path before them."""
    float_nodes = {node.name: node for node in float_model.graph.node if node.name}
    producers = {out: node for node in quantized.graph.node for out in node.output}
    targets, skipped = {}, []
    for node in quantized.graph.node:
        weight_source = producers.get(node.input[1]) if len(node.input) > 1 else None
        if node.op_type not in _CORRECTABLE or weight_source is None:
            continue
        if weight_source.op_type != "DequantizeLinear" or node.name not in float_nodes:
            continue
        if node.op_type == "Gemm" and not _plain_gemm(node):
            skipped.append(node.name)
            continue
        axis = 1 if node.op_type == "Conv" else -1
        targets[node.name] = _Target(node.name, float_nodes[node.name].output[0], node.output[0], axis)
    depth: dict[str, int] = {}
    for node in quantized.graph.node:  # onnxruntime's quantizer leaves the graph topologically sorted
        level = max((depth.get(name, 0) for name in node.input), default=0)
        if node.name in targets:
            targets[node.name].level = level
            level += 1
        for name in node.output:
            depth[name] = level
    notes = (
        [f"Bias correction skipped Gemm layers with alpha/beta/transA: {', '.join(skipped)}."]
        if skipped
        else []
    )
    return list(targets.values()), notes


def _plain_gemm(node: onnx.NodeProto) -> bool:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)


def _channel_means(
    model: onnx.ModelProto, runs: list[dict[str, np.ndarray]], tensors: dict[str, int]
) -> dict[str, np.ndarray]:
    """Mean of each tensor per channel (along its axis) over all runs, float64."""
    import onnxruntime as ort

    names = list(tensors)
    existing = {value.name for value in model.graph.output}
    patch = onnx.ModelProto()
    for name in names:
        if name not in existing:
            patch.graph.output.add().name = name  # merged into the graph's outputs when parsed
    source = model.SerializeToString() + patch.SerializeToString()
    session = ort.InferenceSession(source, session_options(), providers=["CPUExecutionProvider"])
    sums: dict[str, np.ndarray] = {}
    counts = dict.fromkeys(names, 0)
    for feed in runs:
        for name, value in zip(names, session.run(names, feed), strict=True):
            channels = np.moveaxis(np.asarray(value, np.float64), tensors[name], 0)
            flat = channels.reshape(channels.shape[0], -1)
            sums[name] = sums.get(name, 0) + flat.sum(axis=1)
            counts[name] += flat.shape[1]
    return {name: sums[name] / counts[name] for name in names}


def _shift(quantized: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(quantized - reference).mean())


def _correct(model: onnx.ModelProto, layer: str, delta: np.ndarray) -> str | None:
    """Subtract `delta` (one value per output channel) from the layer's bias; a note if it cannot."""
    graph = model.graph
    node = next(n for n in graph.node if n.name == layer)
    inits = {tensor.name: tensor for tensor in graph.initializer}
    producers = {out: n for n in graph.node for out in n.output}
    bias = node.input[2] if len(node.input) > 2 else ""
    if not bias:
        return _add_bias(model, node, delta, inits, producers)
    source = producers.get(bias)
    if bias in inits:  # a float bias
        values = numpy_helper.to_array(inits[bias]).astype(np.float64) - delta
        inits[bias].CopyFrom(numpy_helper.from_array(values.astype(np.float32), bias))
        return None
    if source is not None and source.op_type == "DequantizeLinear" and source.input[0] in inits:
        codes = inits[source.input[0]]
        scale = numpy_helper.to_array(inits[source.input[1]]).astype(np.float64)
        old = numpy_helper.to_array(codes).astype(np.int64)
        new = np.clip(old - np.round(delta / scale), np.iinfo(np.int32).min, np.iinfo(np.int32).max)
        codes.CopyFrom(numpy_helper.from_array(new.astype(np.int32), codes.name))
        return None
    return f"Bias correction left {layer!r} alone: its bias is computed, not stored."


def _add_bias(
    model: onnx.ModelProto,
    node: onnx.NodeProto,
    delta: np.ndarray,
    inits: dict[str, onnx.TensorProto],
    producers: dict[str, onnx.NodeProto],
) -> str | None:
    """Give a bias-less layer the bias -delta, as int32 codes with scale input_scale × weight_scale."""
    scales = []
    for name in node.input[:2]:
        source = producers.get(name)
        if source is None or source.op_type != "DequantizeLinear" or source.input[1] not in inits:
            return f"Bias correction left {node.name!r} alone: it has no bias and its input is not quantized."
        scales.append(numpy_helper.to_array(inits[source.input[1]]).astype(np.float64))
    scale = np.broadcast_to(scales[0] * scales[1], delta.shape).astype(np.float32)
    codes = np.round(-delta / scale).astype(np.int32)
    base = f"{node.name}/bias_correction"
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(codes, f"{base}_quantized"),
            numpy_helper.from_array(scale, f"{base}_scale"),
            numpy_helper.from_array(np.zeros_like(codes), f"{base}_zero_point"),
        ]
    )
    dequantize = onnx.helper.make_node(
        "DequantizeLinear",
        [f"{base}_quantized", f"{base}_scale", f"{base}_zero_point"],
        [base],
        name=f"{base}_DequantizeLinear",
        axis=0,
    )
    # Rebuilt rather than inserted into: protobuf's repeated message fields have no insert.
    nodes = [_copied(n) for n in model.graph.node]
    index = next(i for i, n in enumerate(nodes) if n.name == node.name)
    target = nodes[index]
    while len(target.input) < 2:
        target.input.append("")
    if len(target.input) == 2:
        target.input.append(base)
    else:
        target.input[2] = base
    nodes[index : index + 1] = [dequantize, target]
    model.graph.ClearField("node")
    model.graph.node.extend(nodes)
    return None


def _copied(node: onnx.NodeProto) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    return copy
