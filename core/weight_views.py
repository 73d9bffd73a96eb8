"""What the window shows of each layer's weights after optimizing: their statistics (histogram, sparsity
map) as stored in the optimized model, dequantized, and the magnitude below which pruning zeroed them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from slimscope.core.layers import find_layers, layer_weights, weight_blocks
from slimscope.core.stats import LayerStats, compute_layer_stats
from slimscope.core.tasks import Progress, Task


@dataclass(frozen=True)
class WeightView:
    stats: LayerStats  # of the optimized weights, dequantized when stored as integers
    threshold: float | None  # the largest original |w| that became zero; None when none did


def iter_weight_views(
    original: onnx.ModelProto, optimized: onnx.ModelProto, pruned: set[str] | frozenset[str] = frozenset()
) -> Task[dict[str, WeightView]]:
    """Views of every layer the two models share by name; thresholds only for the layers in `pruned`
    (elsewhere, zeros come from rounding small weights, not from a magnitude cut)."""
    before_layers = {layer.name: layer for layer in find_layers(original, {})}
    before_inits = {t.name: t for t in original.graph.initializer}
    after_inits = {t.name: t for t in optimized.graph.initializer}
    layers = [layer for layer in find_layers(optimized, {}) if layer.name in before_layers]
    views: dict[str, WeightView] = {}
    for done, layer in enumerate(layers, start=1):
        values = layer_weights(optimized, layer, after_inits)
        threshold = None
        if layer.name in pruned:
            base = before_layers[layer.name]
            threshold = zeroed_magnitude(layer_weights(original, base, before_inits), values)
        views[layer.name] = WeightView(compute_layer_stats(values, weight_blocks(values, layer)), threshold)
        yield Progress(done / len(layers), f"Weights of {layer.name}")
    return views


def zeroed_magnitude(before: np.ndarray, after: np.ndarray) -> float | None:
    """The largest |before| among the weights `after` holds as zero (same shape); None if none or the shapes
    differ (channel pruning removed rows: there is no elementwise threshold to show)."""
    if before.shape != after.shape:
        return None
    zeroed = (after == 0) & (before != 0)
    return float(np.abs(before[zeroed]).max()) if zeroed.any() else None
