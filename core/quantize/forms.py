"""What each layer became, read back from the quantized graph rather than assumed from the request.

onnxruntime may leave a requested layer in float (an op it does not quantize, a tensor its shape
inference could not type), so the words shown to the user come from the DequantizeLinear nodes that
really feed each layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx

from slimscope.core.layers import Layer, find_layers
from slimscope.core.recipe import QuantSpec

_DTYPES = {
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.INT16: "int16",
    onnx.TensorProto.UINT16: "uint16",
    onnx.TensorProto.INT4: "int4",
    onnx.TensorProto.UINT4: "uint4",
}
_STORED_BITS = {"int8": 8, "uint8": 8, "int16": 16, "uint16": 16, "int4": 4, "uint4": 4}


@dataclass(frozen=True)
class LayerForm:
    """One layer as quantized: None fields mean float."""

    weight_dtype: str | None
    per_channel: bool
    activation_dtype: str | None


@dataclass(frozen=True)
class Description:
    forms: dict[str, str]
    effective_weight_bytes: int  # at the bit widths asked for (a simulated 3-bit weight counts 3 bits)
    stored_weight_bytes: int  # as stored in the model (a simulated 3-bit weight takes 8 bits)
    kinds: frozenset[str]  # "int4", "16-bit", "s8s8", "simulated", "unquantized": what notes to add


def describe_layers(
    original: onnx.ModelProto,
    quantized: onnx.ModelProto,
    settings: dict[str, QuantSpec | None],
    lost: tuple[str, ...] = (),
) -> Description:
    """Forms and weight bytes of every layer of `original` in `quantized` (nodes carry layer names)."""
    found = {layer.name: layer for layer in find_layers(quantized, {})}
    inits = {t.name: t for t in quantized.graph.initializer}
    producers = {out: node for node in quantized.graph.node for out in node.output}
    forms: dict[str, str] = {}
    kinds: set[str] = set()
    effective = stored = 0
    float_bytes = _float_bytes(original)
    for layer in find_layers(original, {}):
        spec = settings.get(layer.name, QuantSpec())
        weights = math.prod(layer.weight_shape)
        form = _read_form(quantized, found[layer.name], inits, producers) if layer.name in found else None
        if layer.name in lost:
            forms[layer.name] = "folded into another node by pre-processing"
        elif spec is None:
            forms[layer.name] = "float (excluded)"
        elif form is None or form.weight_dtype is None:
            forms[layer.name], kinds = "float (onnxruntime did not quantize it)", kinds | {"unquantized"}
        else:
            forms[layer.name] = _words(form, spec)
            kinds |= _kinds(form, spec)
        if form is None or form.weight_dtype is None:
            effective += layer.params * float_bytes[layer.weight]
            stored += layer.params * float_bytes[layer.weight]
            continue
        bias = (layer.params - weights) * 4  # int32 in QDQ
        effective += math.ceil(weights * (spec.weight_bits if spec else 32) / 8) + bias
        stored += math.ceil(weights * _STORED_BITS[form.weight_dtype] / 8) + bias
    return Description(forms, effective, stored, frozenset(kinds))


def _float_bytes(model: onnx.ModelProto) -> dict[str, int]:
    return {
        t.name: np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        for t in model.graph.initializer
    }


def _read_form(model: onnx.ModelProto, layer: Layer, inits: dict, producers: dict) -> LayerForm:
    quant = layer.quantization
    if quant is None or quant.scale is None:
        return LayerForm(None, False, None)
    node = model.graph.node[layer.node_index]
    scale_size = math.prod(inits[quant.scale].dims) if quant.scale in inits else 1
    return LayerForm(
        _DTYPES.get(inits[layer.weight].data_type, "integer"),
        scale_size > 1,
        _activation_dtype(producers.get(node.input[0]), inits),
    )


def _activation_dtype(producer: onnx.NodeProto | None, inits: dict) -> str | None:
    """The integer type of the layer's input: the zero point of the DequantizeLinear feeding it."""
    if producer is None or producer.op_type != "DequantizeLinear":
        return None
    zero = producer.input[2] if len(producer.input) > 2 else ""
    return _DTYPES.get(inits[zero].data_type, "integer") if zero in inits else "uint8"


def _words(form: LayerForm, spec: QuantSpec) -> str:
    simulated = form.weight_dtype == "int8" and spec.weight_bits < 8
    weights = (
        f"simulated {spec.weight_bits}-bit weights in int8" if simulated else f"{form.weight_dtype} weights"
    )
    weights += " per-channel" if form.per_channel else " per-tensor"
    # The request says it: an asymmetric range around zero can still round to zero points of 0.
    weights += "" if spec.symmetric else " asymmetric"
    activations = f"{form.activation_dtype} activations" if form.activation_dtype else "float activations"
    return f"{weights}, {activations} ({_speed(form)})"


def _speed(form: LayerForm) -> str:
    """How onnxruntime's CPU kernels run this form (measured with AVX512-VNNI, batch 1, one thread)."""
    if form.weight_dtype in ("int4", "uint4"):
        return "QDQ; runs slower on CPU: int4 weights are dequantized at run time"
    if "16" in (form.weight_dtype or "") or "16" in (form.activation_dtype or ""):
        return "QDQ; 16-bit runs slower on CPU"
    if form.activation_dtype == "uint8":
        return "QDQ, U8S8"
    if form.activation_dtype == "int8":
        return "QDQ, S8S8; much slower than U8S8 on x86 CPUs"
    return "QDQ; weights dequantized at run time"


def _kinds(form: LayerForm, spec: QuantSpec) -> set[str]:
    kinds = set()
    if form.weight_dtype in ("int4", "uint4"):
        kinds.add("int4")
    if "16" in (form.weight_dtype or "") or "16" in (form.activation_dtype or ""):
        kinds.add("16-bit")
    if form.activation_dtype == "int8":
        kinds.add("s8s8")
    if form.weight_dtype == "int8" and spec.weight_bits < 8:
        kinds.add("simulated")
    return kinds
