"""How much each channel of a group matters: scorers are small callables, so more can be added.

A scorer gets one matrix per producer of the group, [channels, weights feeding that channel] (a row of
zeros where the producer does not hold the channel), and returns one score per channel; the channels
with the lowest scores are removed. Torch-Pruning's `pruner/importance.py` is the model for this shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx

from slimscope.core.layers import tensor_array
from slimscope.core.prune.channel_groups import ChannelGroup

ImportanceScorer = Callable[[Sequence[np.ndarray]], np.ndarray]


def l2_importance(weights: Sequence[np.ndarray]) -> np.ndarray:
    """Sum over producers of each output channel's L2 weight norm."""
    return np.sum([np.linalg.norm(matrix, axis=1) for matrix in weights], axis=0)


def l1_importance(weights: Sequence[np.ndarray]) -> np.ndarray:
    """Sum over producers of each output channel's L1 weight norm."""
    return np.sum([np.abs(matrix).sum(axis=1) for matrix in weights], axis=0)


IMPORTANCE_SCORERS: dict[str, ImportanceScorer] = {"l2": l2_importance, "l1": l1_importance}


def producer_weights(model: onnx.ModelProto, group: ChannelGroup) -> list[np.ndarray]:
    """Each producer's weight as [group channel, the weights that compute it], in float64."""
    inits = {t.name: t for t in model.graph.initializer}
    matrices: dict[str, np.ndarray] = {}
    for producer, cut in group.weight_cuts:
        values = np.moveaxis(tensor_array(inits[cut.tensor]), cut.axis, 0)
        rows = values[cut.offset : cut.offset + cut.length * cut.block].reshape(cut.length, -1)
        matrix = matrices.setdefault(producer, np.zeros((group.channels, rows.shape[1])))
        matrix[cut.start : cut.start + cut.length] = rows
    return list(matrices.values())
