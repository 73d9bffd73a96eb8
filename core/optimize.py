"""Apply a recipe to a model: channel pruning, then weight masks, then quantization.

One generator drives the steps so the GUI and the CLI report the same progress and can cancel between
them. Channel pruning comes first because it changes shapes (and so what calibration sees); masks
next, so that quantization calibrates on the weights that will ship and keeps pruned zeros at zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from slimscope.core.errors import DatasetError, OptimizeError
from slimscope.core.layers import find_layers
from slimscope.core.model import LoadedModel
from slimscope.core.prune.unstructured import prune_weights
from slimscope.core.recipe import INHERIT, LayerSettings, PruneSpec, QuantSpec, Recipe
from slimscope.core.tasks import Progress, Task

DEFAULT_CALIBRATION_SAMPLES = 256


@dataclass
class OptimizeResult:
    model: onnx.ModelProto
    forms: dict[str, str] = field(default_factory=dict)  # per layer: what was done, in words
    sparsity: dict[str, float] = field(default_factory=dict)  # achieved weight sparsity per pruned layer
    dragged: dict[str, list[str]] = field(default_factory=dict)  # channel pruning: layers changed along
    channels_removed: dict[str, float] = field(default_factory=dict)  # fraction of output channels gone
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # choices that likely cost more than they gain
    effective_weight_bytes: int | None = None  # bits × params / 8 when bit widths are simulated
    calibration_cached: bool = False


@dataclass
class OptimizeCache:
    """What a repeat run reuses: calibration ranges (per model content, data and method)."""

    calibration: object = None  # a quantize.CalibrationCache, created on first use

    def calibration_cache(self):
        if self.calibration is None:
            from slimscope.core.quantize import CalibrationCache

            self.calibration = CalibrationCache()
        return self.calibration


def iter_optimize(
    loaded: LoadedModel,
    recipe: Recipe,
    calibration: np.ndarray | None = None,
    *,
    cache: OptimizeCache | None = None,
) -> Task[OptimizeResult]:
    """Yield progress; return the optimized model. `calibration` holds model-ready input samples."""
    layers = find_layers(loaded.model, {})
    recipe.check_layers([layer.name for layer in layers])
    settings = {layer.name: recipe.settings_for(layer.name) for layer in layers}
    result = OptimizeResult(loaded.model)
    _check_weights(loaded.model, settings, result)
    channel = _specs(settings, lambda p: p.structure == "channel" and bool(p.sparsity))
    if channel:
        yield Progress(0.05, "Removing channels")
        result.model = _prune_channels(result.model, channel, result)
    masks = _specs(settings, lambda p: p.structure != "channel" and _prunes(p))
    if masks:
        yield Progress(0.15, "Pruning weights")
        masked = prune_weights(result.model, find_layers(result.model, {}), masks)
        result.model = masked.model
        result.sparsity.update(masked.sparsity)
        result.notes += masked.notes
    quant = {name: s.quantize for name, s in settings.items()}
    if any(spec is not None for spec in quant.values()):
        from slimscope.core.quantize.islands import island_warnings

        result.warnings += island_warnings(result.model, {name for name, spec in quant.items() if spec})
        base = loaded.model if masks and not channel else None  # pruned in place: its prepared form serves
        result.model = yield from _quantize(
            result, quant, calibration, recipe, cache or OptimizeCache(), base
        )
    _describe(result, settings)
    _check_runs(result.model)
    yield Progress(1.0, "Optimized")
    return result


def _check_weights(
    model: onnx.ModelProto, settings: dict[str, LayerSettings], result: OptimizeResult
) -> None:
    """Refuse damaged (NaN, infinite) layer weights; warn about weights no step reaches."""
    from slimscope.core.loading.weight_checks import (
        refuse_nonfinite_weights,
        untouched_sentence,
        untouched_weights,
    )

    if any(s.prune is not None or s.quantize is not None for s in settings.values()):
        refuse_nonfinite_weights(model)
    untouched = untouched_weights(model)
    if untouched:
        result.warnings.append(
            f"{untouched_sentence(untouched)} are left as they are: Slimscope prunes and quantizes "
            "the weights of the main graph only."
        )


def _prunes(spec: PruneSpec) -> bool:
    return spec.n is not None or bool(spec.sparsity) or bool(spec.threshold)


def _specs(settings: dict[str, LayerSettings], wanted) -> dict[str, PruneSpec]:
    return {name: s.prune for name, s in settings.items() if s.prune is not None and wanted(s.prune)}


def _prune_channels(
    model: onnx.ModelProto, specs: dict[str, PruneSpec], result: OptimizeResult
) -> onnx.ModelProto:
    from slimscope.core.prune.channel_apply import apply_channel_pruning
    from slimscope.core.prune.channel_groups import find_channel_groups
    from slimscope.core.prune.channel_plan import plan_channel_pruning

    groups = find_channel_groups(model)
    plan = plan_channel_pruning(model, groups, specs)
    result.dragged.update(plan.dragged)
    for group_plan in plan.groups:  # what was removed after rounding, not what was asked
        for name in group_plan.group.producers:
            result.channels_removed[name] = len(group_plan.removed) / max(group_plan.group.channels, 1)
    for group in groups:
        wanted = [name for name in group.producers if name in specs]
        if wanted and not group.prunable:
            result.notes.append(f"Channels of {', '.join(map(repr, wanted))} were kept: {group.reason}")
    return apply_channel_pruning(model, plan)


def _quantize(
    result: OptimizeResult,
    quant: dict[str, QuantSpec | None],
    calibration,
    recipe: Recipe,
    cache,
    pruned_from: onnx.ModelProto | None = None,
):
    from slimscope.core.quantize import iter_quantize
    from slimscope.core.quantize.boundary_layers import keep_first_last

    if calibration is None or len(calibration) == 0:
        raise DatasetError("The recipe quantizes layers, which needs calibration data (give --calib DATA).")
    count = int(recipe.data.get("calibration_samples", DEFAULT_CALIBRATION_SAMPLES))
    samples = np.asarray(calibration[:count])
    explicit = [name for name, override in recipe.layers if override.quantize is not INHERIT]
    quant, kept_notes = keep_first_last(result.model, quant, recipe.ptq.keep_first_last, explicit)
    result.notes += kept_notes
    quantized = yield from iter_quantize(
        result.model,
        quant,
        samples,
        cache=cache.calibration_cache(),
        pruned_from=pruned_from,
        ptq=recipe.ptq,
    )
    result.calibration_cached = quantized.calibration_cached
    result.notes += quantized.notes
    result.effective_weight_bytes = quantized.effective_weight_bytes
    result.forms.update(quantized.forms)
    return quantized.model


def _describe(result: OptimizeResult, settings: dict[str, LayerSettings]) -> None:
    for name, setting in settings.items():
        parts = []
        spec = setting.prune
        if result.channels_removed.get(name):
            parts.append(f"{result.channels_removed[name]:.0%} of channels removed")
        elif spec is not None and spec.structure == "channel" and spec.sparsity:
            parts.append("channels kept (see notes)")
        elif name in result.sparsity:
            parts.append(f"{result.sparsity[name]:.0%} zero ({spec.structure if spec else 'pruned'})")
        parts.append(result.forms.get(name, "float"))
        result.forms[name] = "; ".join(parts)


def _check_runs(model: onnx.ModelProto) -> None:
    import onnxruntime as ort

    try:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's errors are untyped; this one means a bug in a pass
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise OptimizeError(f"onnxruntime cannot run the optimized model: {first}") from exc
