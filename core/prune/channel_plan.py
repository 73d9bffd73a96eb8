"""Which channels each group keeps, from the layers a recipe asks to prune by channel.

A group is pruned when any of its producers is requested, by the largest sparsity asked among them:
coupled layers cannot drop different channels, so asking for one drags the others along, and the plan
says which (`ChannelPlan.dragged`) so that the user is not surprised.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx

from slimscope.core.prune.channel_groups import ChannelGroup
from slimscope.core.prune.channel_importance import ImportanceScorer, l2_importance, producer_weights
from slimscope.core.recipe import PruneSpec


@dataclass(frozen=True)
class GroupPlan:
    group: ChannelGroup
    keep: tuple[int, ...]  # channel indices kept, ascending
    sparsity: float  # the largest requested among the group's producers
    requested_by: tuple[str, ...]  # the group's producers the recipe asked to prune

    @property
    def removed(self) -> tuple[int, ...]:
        kept = set(self.keep)
        return tuple(c for c in range(self.group.channels) if c not in kept)


@dataclass(frozen=True)
class ChannelPlan:
    groups: tuple[GroupPlan, ...] = ()
    # requested layer → the other layers whose weights change with it (coupled producers, consumers)
    dragged: dict[str, list[str]] = field(default_factory=dict)
    # requested layer → why its channels stay (its group is not prunable), one sentence
    refused: dict[str, str] = field(default_factory=dict)

    def keep_for(self, layer: str) -> tuple[int, ...] | None:
        """The output channels `layer` keeps, or None when the plan leaves its outputs alone."""
        for plan in self.groups:
            if layer in plan.group.producers:
                return plan.keep
        return None


def plan_channel_pruning(
    model: onnx.ModelProto,
    groups: list[ChannelGroup],
    requested: Mapping[str, PruneSpec],
    scorer: ImportanceScorer = l2_importance,
) -> ChannelPlan:
    """Keep the most important channels of every group that a requested layer produces."""
    asked: dict[int, list[tuple[str, PruneSpec]]] = {}
    refused: dict[str, str] = {}
    groups_of: dict[str, list[ChannelGroup]] = {}
    for group in groups:
        for name in group.producers:
            groups_of.setdefault(name, []).append(group)
    for name, spec in requested.items():
        if spec.structure != "channel" or spec.sparsity is None:
            raise ValueError(f"'{name}' is not asked for channel pruning by sparsity: {spec}")
        if name not in groups_of:
            refused[name] = "It is not a layer with output channels."
        for group in groups_of.get(name, []):
            if group.prunable:
                asked.setdefault(group.id, []).append((name, spec))
            else:
                refused.setdefault(name, group.reason or "Its channels cannot be removed.")
    plans = tuple(_plan_group(model, group, asked[group.id], scorer) for group in groups if group.id in asked)
    return ChannelPlan(plans, _dragged(plans), refused)


def _plan_group(model, group: ChannelGroup, asked: list[tuple[str, PruneSpec]], scorer) -> GroupPlan:
    spec = max((spec for _, spec in asked), key=lambda s: (s.sparsity, s.round_to))
    assert spec.sparsity is not None
    count = channels_to_keep(group.channels, spec.sparsity, spec.round_to)
    scores = np.asarray(scorer(producer_weights(model, group)), dtype=np.float64)
    if scores.shape != (group.channels,):
        raise ValueError(f"The importance scorer returned shape {scores.shape}, not ({group.channels},).")
    # Highest scores kept; a stable sort keeps the lower index among equal scores.
    keep = np.sort(np.argsort(-scores, kind="stable")[:count])
    return GroupPlan(
        group, tuple(int(c) for c in keep), spec.sparsity, tuple(dict.fromkeys(n for n, _ in asked))
    )


def channels_to_keep(channels: int, sparsity: float, round_to: int) -> int:
    """How many of `channels` stay: a multiple of `round_to` (onnxruntime's kernels run faster on
    aligned counts), never more than there are, never none. Halves round up, not to even."""
    wanted = channels * (1.0 - sparsity)
    if channels < round_to:
        return min(channels, max(1, _round_half_up(wanted)))
    return min(channels, max(round_to, _round_half_up(wanted / round_to) * round_to))


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def _dragged(plans: tuple[GroupPlan, ...]) -> dict[str, list[str]]:
    dragged: dict[str, list[str]] = {}
    for plan in plans:
        if not plan.removed:
            continue
        changed = [*plan.group.producers, *plan.group.consumers]
        for name in plan.requested_by:
            others = dragged.setdefault(name, [])
            others.extend(n for n in changed if n != name and n not in others)
    return dragged
