"""Which weight entries stay at each step of gradual pruning: the one-shot pruners, asked for less.

A step asks the recipe's pruning with every target scaled by the schedule's fraction (sparsity and
threshold; N:M from the first step) on the current, fine-tuned weights. Unstructured and N:M masks come
from `prune.unstructured.prune_weights`, channel masks from the channel plan (`prune.channel_*`), so a
retrained model is pruned by exactly the rules of the one-shot optimizer, and its last step asks exactly
the recipe's targets. Channels are zeroed (producer and consumer entries alike) while training and
removed for real by the optimizer afterwards; zeroed entries stay the least important, so later steps
and the final removal pick them again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from slimscope.core.layers import Layer, find_layers
from slimscope.core.recipe import PruneSpec, Recipe


@dataclass(frozen=True)
class PruneTargets:
    """The recipe's pruning per layer, split by how it is applied."""

    masks: dict[str, PruneSpec]  # unstructured and N:M
    channels: dict[str, PruneSpec]  # channel-structured, by sparsity

    def __bool__(self) -> bool:
        return bool(self.masks or self.channels)


def prune_targets(model: onnx.ModelProto, recipe: Recipe) -> PruneTargets:
    """What the recipe prunes in `model`, per layer."""
    masks: dict[str, PruneSpec] = {}
    channels: dict[str, PruneSpec] = {}
    for layer in find_layers(model, {}):
        spec = recipe.settings_for(layer.name).prune
        if spec is None or layer.quantized:
            continue
        if spec.structure == "channel":
            if spec.sparsity:
                channels[layer.name] = spec
        elif spec.n is not None or spec.sparsity or spec.threshold:
            masks[layer.name] = spec
    return PruneTargets(masks, channels)


def scaled_spec(spec: PruneSpec, fraction: float) -> PruneSpec:
    """The spec asking `fraction` of its target (N:M patterns are all or nothing)."""
    if spec.n is not None:
        return spec
    return dataclasses.replace(
        spec,
        sparsity=None if spec.sparsity is None else spec.sparsity * fraction,
        threshold=None if spec.threshold is None else spec.threshold * fraction,
    )


def step_masks(model: onnx.ModelProto, targets: PruneTargets, fraction: float) -> dict[str, np.ndarray]:
    """Per weight initializer touched, a boolean array of its shape: True where the entry stays."""
    layers = find_layers(model, {})
    keep: dict[str, np.ndarray] = {}
    if targets.masks:
        keep.update(_weight_masks(model, layers, targets, fraction))
    if targets.channels:
        for name, mask in _channel_masks(model, targets, fraction).items():
            keep[name] = keep[name] & mask if name in keep else mask
    return keep


def _weight_masks(
    model, layers: list[Layer], targets: PruneTargets, fraction: float
) -> dict[str, np.ndarray]:
    from slimscope.core.prune.unstructured import prune_weights

    specs = {name: scaled_spec(spec, fraction) for name, spec in targets.masks.items()}
    pruned = prune_weights(model, layers, specs).model
    values = {t.name: t for t in pruned.graph.initializer}
    return {
        layer.weight: numpy_helper.to_array(values[layer.weight]) != 0
        for layer in layers
        if layer.name in specs and not layer.quantized
    }


def _channel_masks(model, targets: PruneTargets, fraction: float) -> dict[str, np.ndarray]:
    from slimscope.core.prune.channel_apply import removed_entries
    from slimscope.core.prune.channel_groups import find_channel_groups
    from slimscope.core.prune.channel_plan import plan_channel_pruning

    specs = {name: scaled_spec(spec, fraction) for name, spec in targets.channels.items()}
    plan = plan_channel_pruning(model, find_channel_groups(model), specs)
    shapes = {t.name: tuple(t.dims) for t in model.graph.initializer}
    masks: dict[str, np.ndarray] = {}
    for name, axes in removed_entries(model, plan).items():
        mask = np.ones(shapes[name], dtype=bool)
        for axis, kept in axes.items():
            view = [1] * len(shapes[name])
            view[axis] = -1
            mask &= kept.reshape(view)
        masks[name] = mask
    return masks
