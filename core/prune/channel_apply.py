"""Remove the planned channels from a copy of the model: the ONNX rewrite of channel pruning.

Every cut of a pruned group marks positions to drop on one axis of one constant input of one node;
cuts of several groups on the same input (a Conv's output axis and its input axis, a Concat's inputs
feeding one Conv) combine into one keep-mask per axis, so the order of groups does not matter. A
weight shared by nodes that end up needing different slices is split into one copy per slicing.
Depthwise convolutions get their `group` count from their new filter count; shapes are inferred anew
(recorded shapes of cut weights and tensors are dropped first: they are stale).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from slimscope.core.errors import OptimizeError
from slimscope.core.prune.channel_plan import ChannelPlan, GroupPlan
from slimscope.core.tasks import Progress, Task, run_sync

# (node index, input slot) → axis → which positions stay
Masks = dict[tuple[int, int], dict[int, np.ndarray]]


def apply_channel_pruning(model: onnx.ModelProto, plan: ChannelPlan) -> onnx.ModelProto:
    """A new model without the channels `plan` removes; `model` is left as it was."""
    return run_sync(iter_apply_channel_pruning(model, plan))


def iter_apply_channel_pruning(model: onnx.ModelProto, plan: ChannelPlan) -> Task[onnx.ModelProto]:
    """`apply_channel_pruning` as a task: yields progress, returns the new model."""
    pruned = onnx.ModelProto()
    pruned.CopyFrom(model)
    graph = pruned.graph
    active = [group_plan for group_plan in plan.groups if group_plan.removed]
    masks: Masks = {}
    for number, group_plan in enumerate(active):
        yield Progress(0.8 * number / max(len(active), 1), f"Planning cuts for channel group {number + 1}")
        _mark_cuts(graph, group_plan, masks)
    yield Progress(0.8, "Slicing weights")
    _slice_initializers(graph, masks)
    _update_depthwise_groups(graph, masks)
    for group_plan in active:
        for node_index in group_plan.group.reshapes:
            _flatten_target(graph, graph.node[node_index])
    changed = {name for group_plan in active for name in group_plan.group.tensors}
    _drop_value_info(graph, changed | {tensor.name for tensor in graph.initializer})
    yield Progress(0.9, "Inferring shapes")
    return _inferred(pruned)


def _drop_value_info(graph: onnx.GraphProto, names: set[str]) -> None:
    """Forget the recorded shapes of `names`. Exporters such as PaddlePaddle's record shapes for weights
    (their BatchNorm scales, conv filters) and intermediate tensors; after slicing, onnx's inference
    refuses a recorded shape that disagrees with the new one ("Inferred shape and existing shape differ")."""
    kept = [info for info in graph.value_info if info.name not in names]
    del graph.value_info[:]
    graph.value_info.extend(kept)


def _inferred(pruned: onnx.ModelProto) -> onnx.ModelProto:
    """Shapes inferred anew. Recorded intermediate shapes are annotations only: when one still disagrees
    (a tensor the channel groups do not list, whose shape followed a pruned one), all are dropped and
    inferred from the graph alone; a graph whose shapes still do not fit is an OptimizeError."""
    try:
        return onnx.shape_inference.infer_shapes(pruned)
    except onnx.shape_inference.InferenceError:
        _drop_value_info(pruned.graph, {info.name for info in pruned.graph.value_info})
    try:
        return onnx.shape_inference.infer_shapes(pruned)
    except onnx.shape_inference.InferenceError as exc:
        raise OptimizeError(
            "Removing these channels left tensor shapes that no longer fit together; keep the channels of "
            "these layers (prune fewer layers, or none)."
        ) from exc


def removed_entries(model: onnx.ModelProto, plan: ChannelPlan) -> dict[str, dict[int, np.ndarray]]:
    """Per initializer, per axis, which positions the plan keeps (False: removed), without removing them.

    Retraining zeroes these entries and keeps them at zero while it fine-tunes, then removes the
    channels for real; a weight cut differently by two of its users keeps only what both keep.
    """
    masks: Masks = {}
    for group_plan in plan.groups:
        if group_plan.removed:
            _mark_cuts(model.graph, group_plan, masks)
    by_tensor: dict[str, dict[int, np.ndarray]] = {}
    for (node_index, slot), axes in masks.items():
        name = model.graph.node[node_index].input[slot]
        for axis, keep in axes.items():
            known = by_tensor.setdefault(name, {})
            known[axis] = keep & known[axis] if axis in known else keep.copy()
    return by_tensor


def _mark_cuts(graph: onnx.GraphProto, group_plan: GroupPlan, masks: Masks) -> None:
    removed = np.asarray(group_plan.removed, dtype=np.int64)
    sizes = {t.name: tuple(t.dims) for t in graph.initializer}
    for cut in group_plan.group.cuts:
        node = graph.node[cut.node] if cut.node < len(graph.node) else None
        if node is None or cut.slot >= len(node.input) or node.input[cut.slot] != cut.tensor:
            raise ValueError("The channel plan was made for another model (its cuts do not match the graph).")
        axis_length = sizes[cut.tensor][cut.axis]
        mask = masks.setdefault((cut.node, cut.slot), {}).setdefault(cut.axis, np.ones(axis_length, bool))
        inside = removed[(removed >= cut.start) & (removed < cut.start + cut.length)] - cut.start
        positions = cut.offset + (inside[:, None] * cut.block + np.arange(cut.block)).ravel()
        mask[positions] = False


def _slice_initializers(graph: onnx.GraphProto, masks: Masks) -> None:
    """Replace each cut weight by its slice; one copy per distinct slicing when a weight is shared."""
    inits = {t.name: t for t in graph.initializer}
    uses: dict[str, list[tuple[int, int]]] = {}
    for index, node in enumerate(graph.node):
        for slot, name in enumerate(node.input):
            if name in inits:
                uses.setdefault(name, []).append((index, slot))
    taken = set(inits) | {out for node in graph.node for out in node.output}
    for name in sorted({graph.node[i].input[s] for i, s in masks}):
        slicings: dict[tuple, list[tuple[int, int]]] = {}
        for use in uses[name]:
            key = tuple((axis, mask.tobytes()) for axis, mask in sorted(masks.get(use, {}).items()))
            slicings.setdefault(key, []).append(use)
        for key, users in slicings.items():
            if not key:
                continue  # uses that keep the whole weight keep the original
            sliced = _sliced(inits[name], masks[users[0]])
            if len(slicings) == 1:
                inits[name].CopyFrom(sliced)
                continue
            sliced.name = _unique(f"{name}_pruned", taken)
            graph.initializer.append(sliced)
            for index, slot in users:
                graph.node[index].input[slot] = sliced.name


def _sliced(tensor: onnx.TensorProto, axis_masks: dict[int, np.ndarray]) -> onnx.TensorProto:
    values = numpy_helper.to_array(tensor)
    for axis, mask in axis_masks.items():
        values = np.compress(mask, values, axis=axis)
    return numpy_helper.from_array(np.ascontiguousarray(values), tensor.name)


def _update_depthwise_groups(graph: onnx.GraphProto, masks: Masks) -> None:
    """A depthwise Conv has one group per channel: its `group` follows its filter count."""
    for (index, slot), axis_masks in masks.items():
        node = graph.node[index]
        if node.op_type != "Conv" or slot != 1 or 0 not in axis_masks:
            continue
        for attr in node.attribute:
            if attr.name == "group" and attr.i > 1:
                attr.i = int(axis_masks[0].sum())


def _flatten_target(graph: onnx.GraphProto, node: onnx.NodeProto) -> None:
    """Reshape to an explicit [N, C*H*W] would be stale after pruning; [0, -1] means the same."""
    taken = {t.name for t in graph.initializer} | {out for n in graph.node for out in n.output}
    name = _unique(f"{node.input[1]}_flat", taken)
    graph.initializer.append(numpy_helper.from_array(np.array([0, -1], dtype=np.int64), name))
    node.input[1] = name


def _unique(base: str, taken: set[str]) -> str:
    name, number = base, 1
    while name in taken:
        name, number = f"{base}{number}", number + 1
    taken.add(name)
    return name
