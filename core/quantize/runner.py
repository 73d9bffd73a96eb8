"""Quantize a model per layer: prepare, calibrate (or reuse cached ranges), run onnxruntime's QDQ quantizer.

onnxruntime's `quantize_static` does all of this behind one call that calibrates every time and
writes files next to its input; its public pieces are used here instead (`create_calibrator`,
`TensorsData`, `QDQQuantizer`), so ranges can be cached and nothing is ever written outside private
temporary folders.
"""

from __future__ import annotations

import copy
from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationMethod, QDQQuantizer, TensorsData
from onnxruntime.quantization.quant_utils import TENSOR_NAME_QUANT_SUFFIX

from slimscope.core.errors import QuantizationError, RecipeError
from slimscope.core.layers import Layer, find_layers
from slimscope.core.model import default_opset
from slimscope.core.quantize.bias_correction import iter_correct_bias
from slimscope.core.quantize.calibration import (
    CalibrationCache,
    CalibrationData,
    calibration_data,
    iter_calibrate,
    model_digest,
)
from slimscope.core.quantize.equalize import equalize_model
from slimscope.core.quantize.forms import Description, describe_layers
from slimscope.core.quantize.ort_options import (
    OP_TYPES_TO_QUANTIZE,
    OrtQuantOptions,
    simulated_range,
    translate_settings,
)
from slimscope.core.quantize.prepare import PreparedModel, prepare_model
from slimscope.core.recipe import PtqSpec, QuantSpec
from slimscope.core.tasks import Progress, Task

_CHECKABLE_BYTES = 2**31 - 2**20  # onnx's checker takes models below protobuf's 2 GB only


@dataclass(frozen=True)
class QuantizeResult:
    model: onnx.ModelProto
    forms: dict[str, str]  # layer name → what it became, in words
    notes: list[str]
    effective_weight_bytes: int  # layer weights at their requested bit widths (bits × params / 8)
    calibration_cached: bool  # every range came from the cache: no calibration ran
    stored_weight_bytes: int = 0  # the same weights as the model stores them (simulated widths take 8 bits)


def iter_quantize(
    model: onnx.ModelProto,
    settings: dict[str, QuantSpec | None],
    calibration: Sequence[dict[str, np.ndarray]] | np.ndarray,
    *,
    cache: CalibrationCache | None = None,
    pruned_from: onnx.ModelProto | None = None,
    ptq: PtqSpec | None = None,
) -> Generator[Progress, None, QuantizeResult]:
    """Quantize `model` layer by layer (None = keep float; layers not in `settings` get `QuantSpec()`).

    `calibration` is a list of input feeds, or an array of samples for a one-input model. Ranges are
    looked up in `cache` first; closing the generator stops calibration and removes its files.
    `pruned_from`: the model `model` was pruned from (weights zeroed, graph unchanged); its prepared form
    is cached and reused for every later pruning of it instead of preparing each pruned copy.
    `ptq`: cross-layer equalization of the prepared model before calibration (cached apart from the
    plain prepared form, and so are its ranges) and bias correction after quantizing; its
    `keep_first_last` is applied to `settings` by the caller (see boundary_layers.keep_first_last).
    """
    layers = find_layers(model, {})
    _check_settings(layers, settings)
    if all(settings.get(layer.name, QuantSpec()) is None for layer in layers):
        return _unchanged(model, settings)
    cache = cache if cache is not None else CalibrationCache(max_entries=1)
    yield Progress(0.0, "Preparing the model for quantization")
    data = calibration_data(model, calibration)
    ptq = ptq or PtqSpec()
    prepared, model_hash = _prepared(model, layers, data, cache, pruned_from, ptq)
    options = translate_settings(
        prepared.model,
        find_layers(prepared.model, {}),
        settings,
        cache.weight_params(model_hash, data.digest),
    )
    ranges, cached = yield from _calibrate(prepared, data, options, cache, model_hash)
    yield Progress(0.9, "Quantizing with onnxruntime")
    quantized, opset_note = _run_quantizer(prepared.model, options, ranges)
    _clamp_simulated(quantized, options.simulated)
    corrected_notes: tuple[str, ...] = ()
    if ptq.bias_correction:
        corrected = yield from _scaled(iter_correct_bias(prepared.model, quantized, data.feeds), 0.92, 0.07)
        quantized, corrected_notes = corrected.model, corrected.notes
    _check(quantized)
    description = describe_layers(model, quantized, settings, prepared.lost_layers)
    notes = [*prepared.notes, *data.notes, *options.notes, *([opset_note] if opset_note else [])]
    notes += [*corrected_notes, *_notes(description)]
    yield Progress(1.0, "Quantized")
    return QuantizeResult(
        quantized,
        description.forms,
        notes,
        description.effective_weight_bytes,
        cached,
        description.stored_weight_bytes,
    )


def _prepared(
    model: onnx.ModelProto,
    layers: list[Layer],
    data: CalibrationData,
    cache: CalibrationCache,
    pruned_from: onnx.ModelProto | None,
    ptq: PtqSpec,
) -> tuple[PreparedModel, str]:
    """The prepared (and, if asked, equalized) model and the cache key its ranges are kept under.

    The equalized form is cached under its own key, so that switching equalization on or off never
    reuses ranges measured on the other form; it is made from the plain prepared form, which stays
    cached for pruned copies to derive theirs from (their equalization scales are then computed afresh).
    """
    model_hash = model_digest(model)
    key = f"{model_hash}+equalize{'+relu' if ptq.relu6_to_relu else ''}" if ptq.equalize else model_hash
    prepared = cache.prepared(key, data.digest)
    if prepared is not None:
        return prepared, key
    prepared = cache.prepared(model_hash, data.digest)
    if prepared is None:
        prepared = _derived_from_base(model, layers, data, cache, pruned_from)
        if prepared is None:
            prepared = prepare_model(model, layers, data.input_shapes)
        cache.store_prepared(model_hash, data.digest, prepared, source=model)
    if ptq.equalize:
        equalized = equalize_model(prepared.model, relu6_to_relu=ptq.relu6_to_relu)
        prepared = PreparedModel(equalized.model, (*prepared.notes, *equalized.notes), prepared.lost_layers)
        cache.store_prepared(key, data.digest, prepared)
    return prepared, key


def _derived_from_base(
    model: onnx.ModelProto,
    layers: list[Layer],
    data: CalibrationData,
    cache: CalibrationCache,
    pruned_from: onnx.ModelProto | None,
) -> PreparedModel | None:
    """The prepared form of a pruned `model` from its unpruned base's (prepared once and cached)."""
    derived = cache.derive_prepared(model, layers, data.digest)
    if derived is not None or pruned_from is None:
        return derived
    base_hash = model_digest(pruned_from)
    if cache.prepared(base_hash, data.digest) is None:
        base = prepare_model(pruned_from, find_layers(pruned_from, {}), data.input_shapes)
        cache.store_prepared(base_hash, data.digest, base, source=pruned_from)
    return cache.derive_prepared(model, layers, data.digest)


def _check_settings(layers: list[Layer], settings: dict[str, QuantSpec | None]) -> None:
    names = {layer.name for layer in layers}
    unknown = [name for name in settings if name not in names]
    if unknown:
        raise RecipeError(f"The model has no layer named {unknown[0]!r}.", layer=unknown[0])
    if any(layer.quantized for layer in layers):
        raise QuantizationError("This model is already quantized; open its float original to quantize it.")


def _unchanged(model: onnx.ModelProto, settings: dict[str, QuantSpec | None]) -> QuantizeResult:
    copy_ = onnx.ModelProto()
    copy_.CopyFrom(model)
    description = describe_layers(model, copy_, settings)
    notes = ["No layer is set to be quantized; the model is unchanged."]
    return QuantizeResult(
        copy_,
        description.forms,
        notes,
        description.effective_weight_bytes,
        False,
        description.stored_weight_bytes,
    )


def _calibrate(
    prepared: PreparedModel,
    data: CalibrationData,
    options: OrtQuantOptions,
    cache: CalibrationCache,
    model_hash: str,
) -> Task[tuple[TensorsData, bool]]:
    """Ranges for every tensor, each from the method its layer asked for; (ranges, all from cache)."""
    found: dict[CalibrationMethod, TensorsData] = {}
    missing = []
    for method in options.methods:
        cached = cache.ranges(model_hash, data.digest, method)
        if cached is None:
            missing.append(method)
        else:
            found[method] = cached
    for index, method in enumerate(missing):
        start, span = 0.05 + 0.85 * index / len(missing), 0.85 / len(missing)
        ranges = yield from _scaled(iter_calibrate(prepared.model, data, method), start, span)
        cache.store_ranges(model_hash, data.digest, method, ranges)
        found[method] = ranges
    merged = dict(found[options.default_method].data)
    for tensor, method in options.tensor_methods.items():
        if tensor in found[method]:
            merged[tensor] = found[method][tensor]
    _refuse_nonfinite_ranges(prepared.model, merged)
    # A fresh TensorsData: the quantizer adjusts ranges in place (Relu, Softmax), the cache must not see it.
    return TensorsData(CalibrationMethod.MinMax, merged), not missing


def _refuse_nonfinite_ranges(model: onnx.ModelProto, ranges: dict) -> None:
    """A NaN or infinite range ends in onnxruntime's 'scale issue': say which value it was instead."""
    producers = {out: node for node in model.graph.node for out in node.output}
    order = {name: i for i, name in enumerate([v.name for v in model.graph.input] + list(producers))}
    for tensor in sorted(ranges, key=lambda name: order.get(name, len(order))):
        lowest, highest = getattr(ranges[tensor], "range_value", (0.0, 0.0))
        if np.isfinite(lowest).all() and np.isfinite(highest).all():
            continue
        node = producers.get(tensor)
        where = f" (the output of node '{node.name or node.op_type}')" if node is not None else ""
        raise QuantizationError(
            f"'{tensor}'{where} takes NaN or infinite values on the calibration data, so its range cannot "
            "be measured: check the model's weights and constants and the data's preprocessing."
        )


def _scaled(task: Task, start: float, span: float) -> Task:
    """Forward a sub-task's progress mapped into [start, start + span]; closing closes the sub-task."""
    try:
        while True:
            try:
                progress = next(task)
            except StopIteration as stop:
                return stop.value
            fraction = None if progress.fraction is None else start + span * progress.fraction
            yield Progress(fraction, progress.message, progress.partial)
    finally:
        task.close()


def _run_quantizer(
    model: onnx.ModelProto, options: OrtQuantOptions, ranges: TensorsData
) -> tuple[onnx.ModelProto, str | None]:
    work, note = _with_opset(model, options.min_opset)
    try:
        quantizer = QDQQuantizer(
            work,
            options.per_channel,
            False,  # reduce_range: for CPUs without VNNI; this one saturates nothing at full range
            options.weight_type,
            options.activation_type,
            ranges,
            [],  # nodes_to_quantize: all
            list(options.nodes_to_exclude),
            list(OP_TYPES_TO_QUANTIZE),
            _copied(options.extra_options),  # the quantizer keeps and edits the overrides dict
        )
        quantizer.quantize_model()
        quantizer.model.topological_sort()  # what quantize_static does before saving: Q/DQ nodes are appended
        return quantizer.model.model, note
    except Exception as exc:  # onnxruntime raises ValueError, AssertionError, KeyError from its passes
        text = str(exc).strip()
        first = (text.splitlines()[0][:300] if text else "") or type(exc).__name__
        raise QuantizationError(f"onnxruntime could not quantize this model: {first}") from exc


def _copied(extra_options: dict) -> dict:
    """A copy of `extra_options` the quantizer may edit. Its TensorQuantOverrides (per-channel scales
    make thousands of dicts, slow to deepcopy) are copied down to each channel's dict, whose values
    `translate_settings` only ever makes immutable scalars; everything else is deep-copied."""
    overrides = extra_options.get("TensorQuantOverrides", {})
    rest = copy.deepcopy({k: v for k, v in extra_options.items() if k != "TensorQuantOverrides"})
    return rest | {
        "TensorQuantOverrides": {name: [dict(c) for c in chans] for name, chans in overrides.items()}
    }


def _with_opset(model: onnx.ModelProto, opset: int) -> tuple[onnx.ModelProto, str | None]:
    """A copy at `opset` at least (int4 and 16-bit QuantizeLinear/DequantizeLinear need 21)."""
    work = onnx.ModelProto()
    work.CopyFrom(model)
    current = default_opset(work)
    if current >= opset:
        return work, None
    try:
        converted = onnx.version_converter.convert_version(work, opset)
    except Exception as exc:  # the converter raises bare RuntimeError/ValidationError per adapter
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        # onnxruntime then writes its own com.microsoft Q/DQ ops, which take these types at any opset.
        return (
            work,
            f"Kept opset {current} (the converter failed: {first}); 4/16-bit types use onnxruntime's own Q/DQ ops.",
        )
    needed = onnx.helper.find_min_ir_version_for(list(converted.opset_import), ignore_unknown=True)
    converted.ir_version = max(converted.ir_version, needed)
    return (
        converted,
        f"Upgraded the model from opset {current} to {opset} for int4/16-bit quantization types.",
    )


def _clamp_simulated(model: onnx.ModelProto, simulated: dict[str, tuple[int, bool]]) -> None:
    """Keep simulated b-bit codes in range. The explicit scales put every weight within ±0.5 of the
    range; only a value exactly on a rounding tie can land one code outside, and is clamped here."""
    wanted = {name + TENSOR_NAME_QUANT_SUFFIX: spec for name, spec in simulated.items()}
    for index, tensor in enumerate(model.graph.initializer):
        if tensor.name not in wanted:
            continue
        low, high = simulated_range(*wanted[tensor.name])
        codes = numpy_helper.to_array(tensor)
        if codes.min() < low or codes.max() > high:
            clamped = numpy_helper.from_array(np.clip(codes, low, high).astype(codes.dtype), tensor.name)
            model.graph.initializer[index].CopyFrom(clamped)


def _check(model: onnx.ModelProto) -> None:
    if model.ByteSize() >= _CHECKABLE_BYTES:
        return
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise QuantizationError(f"The quantized model is not valid ONNX: {first}") from exc


def _notes(description: Description) -> list[str]:
    kinds, notes = description.kinds, []
    if "int4" in kinds:
        notes.append(
            "int4 weights are stored at 4 bits, but onnxruntime's CPU kernels dequantize them at run time: "
            "measured 2.5–4x slower than float."
        )
    if "16-bit" in kinds:
        notes.append(
            "16-bit types have no fast integer kernels in onnxruntime on CPU: those layers run slower than 8-bit ones."
        )
    if "s8s8" in kinds:
        notes.append(
            "int8 (symmetric) activations run far slower than uint8 ones on x86 CPUs: measured 1.1x faster than "
            "float for ResNet-18, against 3.3x with uint8 activations."
        )
    if "simulated" in kinds:
        notes.append(
            "Simulated bit widths keep weights in int8 using only the b-bit codes: accuracy is that of b bits, "
            "file size and speed those of int8."
        )
    if "unquantized" in kinds:
        notes.append("onnxruntime left some layers that were set to be quantized in float (see their forms).")
    notes.append(
        f"Layer weights take {description.effective_weight_bytes:,} bytes at their effective bit widths "
        f"and {description.stored_weight_bytes:,} bytes as stored in the model."
    )
    return notes
