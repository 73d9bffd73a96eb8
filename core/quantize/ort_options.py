"""Per-layer `QuantSpec`s translated, in one function, into what onnxruntime's QDQ quantizer is told.

onnxruntime takes global types plus a stringly `extra_options` dict whose `TensorQuantOverrides` key holds
per-tensor exceptions; `translate_settings` is the only place that dict is written. Everything else in
Slimscope speaks `QuantSpec`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationMethod, QuantType
from onnxruntime.quantization.quant_utils import compute_scale_zp
from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

from slimscope.core.layers import Layer, tensor_array
from slimscope.core.model import default_opset
from slimscope.core.quantize.weight_params import scale_zp_override
from slimscope.core.recipe import QuantSpec

# The fast form on x86 (measured 3.3x ResNet-18 vs 1.1x for int8 activations): uint8 activations,
# asymmetric; int8 weights, symmetric (zero point 0, so pruned zeros stay exactly zero).
DEFAULT_ACTIVATION = (QuantType.QUInt8, False)

# The op types quantize_static quantizes by default, so that our calls match its behaviour.
OP_TYPES_TO_QUANTIZE = tuple(sorted(set(QLinearOpsRegistry) | set(QDQRegistry)))

METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "percentile": CalibrationMethod.Percentile,
    "entropy": CalibrationMethod.Entropy,
}

# Weight bit widths onnxruntime has a real integer type for; the others are simulated in int8.
_NATIVE_WEIGHT_TYPES = {8: QuantType.QInt8, 16: QuantType.QInt16, 4: QuantType.QInt4}
# Types that ONNX QuantizeLinear/DequantizeLinear accept only from opset 21.
_OPSET21_TYPES = {QuantType.QInt4, QuantType.QUInt4, QuantType.QInt16, QuantType.QUInt16}


@dataclass(frozen=True)
class OrtQuantOptions:
    """Everything passed to onnxruntime's `QDQQuantizer`, derived from the per-layer specs."""

    activation_type: QuantType
    weight_type: QuantType
    per_channel: bool
    nodes_to_exclude: tuple[str, ...]
    extra_options: dict[str, Any]  # onnxruntime's own keys; TensorQuantOverrides among them
    default_method: CalibrationMethod
    # Activations whose calibration range comes from another method than `default_method`.
    tensor_methods: dict[str, CalibrationMethod] = field(default_factory=dict)
    # Weights stored in int8 with fewer bits used: initializer name → (bits, symmetric).
    simulated: dict[str, tuple[int, bool]] = field(default_factory=dict)
    min_opset: int = 13  # 21 when int4 or 16-bit types are used
    notes: tuple[str, ...] = ()

    @property
    def methods(self) -> tuple[CalibrationMethod, ...]:
        """Every calibration method needed, the default first."""
        others = sorted(set(self.tensor_methods.values()) - {self.default_method}, key=lambda m: m.value)
        return (self.default_method, *others)


def translate_settings(
    model: onnx.ModelProto,
    layers: list[Layer],
    settings: dict[str, QuantSpec | None],
    weight_params: dict | None = None,
) -> OrtQuantOptions:
    """The one translation from per-layer specs (None = keep float) to onnxruntime's options.

    `layers` are `find_layers(model, …)` of this very model, whose weighted nodes are named after
    their layers. Layers missing from `settings` get `QuantSpec()`. Given `weight_params` (a memo kept
    per model), int8/int16 weights get their scale and zero point precomputed (`weight_params.py`),
    bit for bit what onnxruntime would compute, instead of onnxruntime's per-channel Python loop.
    """
    specs = {layer.name: settings.get(layer.name, QuantSpec()) for layer in layers}
    quantized = [(layer, spec) for layer in layers if (spec := specs[layer.name]) is not None]
    overrides, simulated = _weight_overrides(model, quantized, weight_params)
    activation, symmetric = _most_common([_activation(spec) for _, spec in quantized], DEFAULT_ACTIVATION)
    default_method = _most_common(
        [METHODS[spec.calibration] for _, spec in quantized], CalibrationMethod.MinMax
    )
    tensor_methods, notes = {}, []
    known = _value_names(model)
    for tensor, wanted in _activation_requests(model, quantized).items():
        chosen = _resolve(wanted)
        if len({_activation(r.spec) for r in wanted}) > 1:
            notes.append(_conflict_note(tensor, wanted, chosen))
        if tensor not in known:  # onnxruntime refuses overrides of tensors its shape inference cannot see
            continue
        if _activation(chosen.spec) != (activation, symmetric):
            qtype, sym = _activation(chosen.spec)
            overrides[tensor] = [{"quant_type": qtype, "symmetric": sym}]
        if METHODS[chosen.spec.calibration] != default_method:
            tensor_methods[tensor] = METHODS[chosen.spec.calibration]

    used_types = {activation} | {o[0]["quant_type"] for o in overrides.values() if "quant_type" in o[0]}
    per_channel = any(spec.granularity == "per_channel" for _, spec in quantized)
    return OrtQuantOptions(
        activation_type=activation,
        weight_type=QuantType.QInt8,
        per_channel=per_channel and _per_channel_allowed(model),
        nodes_to_exclude=tuple(layer.name for layer in layers if specs[layer.name] is None),
        extra_options={"ActivationSymmetric": symmetric, "TensorQuantOverrides": overrides},
        default_method=default_method,
        tensor_methods=tensor_methods,
        simulated=simulated,
        min_opset=21 if used_types & _OPSET21_TYPES else 13,
        notes=tuple(notes),
    )


def _weight_overrides(
    model: onnx.ModelProto, quantized: list[tuple[Layer, QuantSpec]], weight_params: dict | None
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, tuple[int, bool]]]:
    """TensorQuantOverrides of the layers' weights, and which of them are simulated in int8."""
    nodes = {node.name: node for node in model.graph.node}
    inits = {t.name: t for t in model.graph.initializer}
    overrides, simulated = {}, {}
    for layer, spec in quantized:
        slot = list(nodes[layer.name].input).index(layer.weight)
        # onnxruntime quantizes a constant left operand of MatMul per tensor: no channel axis there.
        per_channel = spec.granularity == "per_channel" and _per_channel_allowed(model) and slot == 1
        overrides[layer.weight] = _weight_override(
            inits[layer.weight], layer, spec, per_channel, weight_params
        )
        if spec.weight_bits not in _NATIVE_WEIGHT_TYPES:
            simulated[layer.weight] = (spec.weight_bits, spec.symmetric)
    return overrides, simulated


def _activation_requests(
    model: onnx.ModelProto, quantized: list[tuple[Layer, QuantSpec]]
) -> dict[str, list[_Request]]:
    """For each tensor a quantized layer reads or writes, what each such layer asks for."""
    nodes = {node.name: node for node in model.graph.node}
    inits = {t.name for t in model.graph.initializer}
    requests: dict[str, list[_Request]] = {}
    for layer, spec in quantized:
        node = nodes[layer.name]
        for name in _activation_inputs(node, inits):
            requests.setdefault(name, []).append(_Request(spec, True, layer.name))
        for name in node.output[:1]:
            requests.setdefault(name, []).append(_Request(spec, False, layer.name))
    return requests


def _per_channel_allowed(model: onnx.ModelProto) -> bool:
    return default_opset(model) >= 13  # DequantizeLinear has `axis` from opset 13


@dataclass(frozen=True)
class _Request:
    """One layer asking for a type and calibration method for a tensor it reads or writes."""

    spec: QuantSpec
    consumer: bool  # the layer reads the tensor (its kernel depends on the input type)
    layer: str


def _activation(spec: QuantSpec) -> tuple[QuantType, bool]:
    # Symmetric activations mean signed ones (zero point 0); asymmetric ones are unsigned (U8S8).
    if spec.activation_bits == 16:
        return (QuantType.QInt16, True) if spec.activation_symmetric else (QuantType.QUInt16, False)
    return (QuantType.QInt8, True) if spec.activation_symmetric else (QuantType.QUInt8, False)


def _resolve(wanted: list[_Request]) -> _Request:
    """A tensor gets one type: the widest asked for, and among equals what its reader asked for
    (the reader's kernel is what the type decides)."""
    return max(wanted, key=lambda r: (r.spec.activation_bits, r.consumer))


def _conflict_note(tensor: str, wanted: list[_Request], chosen: _Request) -> str:
    names = ", ".join(sorted({repr(r.layer) for r in wanted}))
    qtype, _ = _activation(chosen.spec)
    return f"Tensor {tensor!r} is shared by layers {names} with different activation settings; it uses {_TYPE_WORDS[qtype]}."


_TYPE_WORDS = {
    QuantType.QUInt8: "uint8",
    QuantType.QInt8: "int8",
    QuantType.QUInt16: "uint16",
    QuantType.QInt16: "int16",
    QuantType.QInt4: "int4",
}


def _most_common(values: list, default):
    if not values:
        return default
    counts = Counter(values)
    best = max(counts.values())
    return default if counts.get(default) == best else next(v for v in values if counts[v] == best)


def _weight_override(
    tensor: onnx.TensorProto,
    layer: Layer,
    spec: QuantSpec,
    per_channel: bool,
    weight_params: dict | None,
) -> list[dict]:
    """TensorQuantOverrides for a layer's weight: its type, symmetry and channel axis (or, with
    `weight_params`, its type, channel axis and precomputed scale and zero point)."""
    bits = spec.weight_bits
    axis = {"axis": layer.out_axis} if per_channel else {}
    if bits in _NATIVE_WEIGHT_TYPES:
        qtype = _NATIVE_WEIGHT_TYPES[bits]
        if weight_params is not None:
            fixed = scale_zp_override(
                tensor, qtype, spec.symmetric, layer.out_axis if axis else None, weight_params
            )
            if fixed is not None:
                return fixed
        return [{"quant_type": qtype, "symmetric": spec.symmetric, **axis}]
    scales, zeros = simulated_scales(
        tensor_array(tensor), bits, spec.symmetric, layer.out_axis if axis else None
    )
    # Explicit scale and zero point restrict the int8 codes to the b-bit range; onnxruntime's own
    # quantization then rounds with exactly these parameters.
    channels = [{"scale": float(s), "zero_point": int(z)} for s, z in zip(scales, zeros, strict=True)]
    channels[0] |= {"quant_type": QuantType.QInt8, **axis}
    return channels


def simulated_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """The int8 codes a simulated `bits`-bit weight may use (symmetric: ±(2^(b-1) - 1), like int8's ±127)."""
    half = 2 ** (bits - 1)
    return (-(half - 1), half - 1) if symmetric else (-half, half - 1)


def simulated_scales(
    weight: np.ndarray, bits: int, symmetric: bool, axis: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point per channel along `axis` (or one for the tensor) for `bits`-bit codes,
    from onnxruntime's own `compute_scale_zp` so rounding matches its 8-bit path."""
    values = np.asarray(weight, dtype=np.float32)
    rows = (
        np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
        if axis is not None
        else values.reshape(1, -1)
    )
    qmin, qmax = simulated_range(bits, symmetric)
    scales, zeros = [], []
    for row in rows:
        rmin = row.min() if row.size else np.float32(0)
        rmax = row.max() if row.size else np.float32(0)
        zero, scale = compute_scale_zp(
            rmin, rmax, np.array(qmin, np.int8), np.array(qmax, np.int8), symmetric
        )
        scales.append(float(scale))
        zeros.append(int(zero))
    return np.array(scales, np.float32), np.array(zeros, np.int8)


def _activation_inputs(node: onnx.NodeProto, inits: set[str]) -> list[str]:
    """The inputs a layer computes on (not its weight or bias)."""
    if node.op_type in ("Conv", "ConvTranspose", "Gemm"):
        return [name for name in node.input[:1] if name and name not in inits]
    return [name for name in node.input[:2] if name and name not in inits]


def _value_names(model: onnx.ModelProto) -> set[str]:
    graph = model.graph
    return {v.name for v in [*graph.input, *graph.output, *graph.value_info]}
