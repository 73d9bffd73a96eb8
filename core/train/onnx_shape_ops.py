"""ONNX ops that move, cut and compute shapes (Shape, Reshape, Gather, Slice, Concat, ...), registered in
`onnx_ops.OPS`. Shape arithmetic runs on int64 tensors computed from the running input, so a model
exported with batch 1 but a dynamic batch dimension runs with any batch size.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from slimscope.core.errors import TrainingError
from slimscope.core.train.onnx_ops import OPS, NodeSpec, OpFn, axis_of, identity, ints, register


@register("Shape")
def _shape(spec: NodeSpec) -> OpFn:
    start, end = int(spec.attr("start", 0)), spec.attr("end")
    return lambda x: torch.tensor(x.shape[start:end], dtype=torch.int64)


@register("Size")
def _size(spec: NodeSpec) -> OpFn:
    return lambda x: torch.tensor(x.numel(), dtype=torch.int64)


@register("Flatten")
def _flatten(spec: NodeSpec) -> OpFn:
    axis = int(spec.attr("axis", 1))

    def flatten(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(math.prod(x.shape[: axis_of(axis, x.dim())]), -1)

    return flatten


@register("Reshape")
def _reshape(spec: NodeSpec) -> OpFn:
    allow_zero = bool(spec.attr("allowzero", 0))
    fixed = spec.consts[1] if len(spec.consts) > 1 else None
    # A constant target [1, ...] applied to the data: the graph was exported for batches of one.
    batch_of_one = fixed is not None and fixed.size > 1 and int(fixed.reshape(-1)[0]) == 1
    batch_of_one = batch_of_one and bool(spec.from_input and spec.from_input[0])
    state = spec.state

    def reshape(x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        target = ints(shape)
        if not allow_zero:
            target = [x.shape[i] if v == 0 else v for i, v in enumerate(target)]
        if batch_of_one and x.dim() > 0 and x.shape[0] == state.batch > 1:
            raise TrainingError(
                f"The model only takes one sample at a time: its node '{spec.name}' reshapes to the "
                f"fixed shape {target}; export it with a dynamic batch size to train with batches."
            )
        return x.reshape(target)

    return reshape


@register("Transpose")
def _transpose(spec: NodeSpec) -> OpFn:
    perm = spec.attr("perm")
    return lambda x: x.permute(perm if perm is not None else list(range(x.dim() - 1, -1, -1)))


@register("Concat")
def _concat(spec: NodeSpec) -> OpFn:
    axis = int(spec.attr("axis"))
    return lambda *xs: torch.cat(xs, dim=axis)


@register("Split")
def _split(spec: NodeSpec) -> OpFn:
    axis, count = int(spec.attr("axis", 0)), spec.n_outputs
    attr_split = spec.attr("split") if spec.opset < 13 else None

    def split(x: torch.Tensor, sizes: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        if attr_split is not None:
            return torch.split(x, list(attr_split), dim=axis)
        if sizes is not None:
            return torch.split(x, ints(sizes), dim=axis)
        return torch.split(x, -(-x.shape[axis] // count), dim=axis)  # equal parts, the last smaller

    return split


def slice_axes(
    x: torch.Tensor, starts: list[int], ends: list[int], axes: list[int], steps: list[int]
) -> torch.Tensor:
    """ONNX Slice: per axis, clamp start and end to the axis as the spec says; negative steps go backwards."""
    index: list[Any] = [slice(None)] * x.dim()
    flips: list[tuple[int, torch.Tensor]] = []
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        axis, size = axis_of(axis, x.dim()), x.shape[axis_of(axis, x.dim())]
        start, end = start + size if start < 0 else start, end + size if end < 0 else end
        if step > 0:
            index[axis] = slice(min(max(start, 0), size), min(max(end, 0), size), step)
        else:  # torch has no negative steps: gather the indices instead
            start, end = min(max(start, 0), size - 1), min(max(end, -1), size - 1)
            flips.append((axis, torch.arange(start, end, step, dtype=torch.int64)))
    out = x[tuple(index)]
    for axis, indices in flips:
        out = out.index_select(axis, indices)
    return out


@register("Slice")
def _slice(spec: NodeSpec) -> OpFn:
    if spec.opset < 10:
        starts, ends = list(spec.attr("starts")), list(spec.attr("ends"))
        axes = list(spec.attr("axes", range(len(starts))))
        return lambda x: slice_axes(x, starts, ends, axes, [1] * len(starts))

    def sliced(
        x: torch.Tensor,
        starts: torch.Tensor,
        ends: torch.Tensor,
        axes: torch.Tensor | None = None,
        steps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        begin, end = ints(starts), ints(ends)
        along = ints(axes) if axes is not None else list(range(len(begin)))
        return slice_axes(x, begin, end, along, ints(steps) if steps is not None else [1] * len(begin))

    return sliced


@register("Squeeze")
def _squeeze(spec: NodeSpec) -> OpFn:
    attr_axes = spec.attr("axes") if spec.opset < 13 else None

    def squeeze(x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
        dims = attr_axes if attr_axes is not None else (ints(axes) if axes is not None else None)
        if dims is None:
            return x.squeeze()
        return x.squeeze(tuple(axis_of(a, x.dim()) for a in dims))

    return squeeze


@register("Unsqueeze")
def _unsqueeze(spec: NodeSpec) -> OpFn:
    attr_axes = spec.attr("axes") if spec.opset < 13 else None

    def unsqueeze(x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
        dims = list(attr_axes) if attr_axes is not None else ints(axes) if axes is not None else []
        rank = x.dim() + len(dims)
        for axis in sorted(axis_of(a, rank) for a in dims):
            x = x.unsqueeze(axis)
        return x

    return unsqueeze


@register("Gather")
def _gather(spec: NodeSpec) -> OpFn:
    axis = int(spec.attr("axis", 0))

    def gather(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        dim = axis_of(axis, x.dim())
        flat = indices.reshape(-1).long()
        flat = torch.where(flat < 0, flat + x.shape[dim], flat)
        out = x.index_select(dim, flat)
        return out.reshape((*x.shape[:dim], *indices.shape, *x.shape[dim + 1 :]))

    return gather


@register("Expand")
def _expand(spec: NodeSpec) -> OpFn:
    def expand(x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        return x.expand(torch.broadcast_shapes(x.shape, tuple(ints(shape))))  # bidirectional, as ONNX

    return expand


@register("Tile")
def _tile(spec: NodeSpec) -> OpFn:
    return lambda x, repeats: x.repeat(ints(repeats))


@register("Range")
def _range(spec: NodeSpec) -> OpFn:
    return lambda start, limit, delta: torch.arange(start.item(), limit.item(), delta.item()).to(start.dtype)


@register("ConstantOfShape")
def _constant_of_shape(spec: NodeSpec) -> OpFn:
    value = spec.attr("value")
    fill = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    dtype = torch.bool if fill.dtype == np.bool_ else torch.float32 if fill.dtype.kind == "f" else torch.int64
    number = fill[0].item()
    return lambda shape: torch.full(ints(shape), number, dtype=dtype)


def constant_value(spec: NodeSpec) -> np.ndarray:
    """The value of a Constant node (computed once, when the module is built)."""
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in spec.attrs:
            return np.asarray(spec.attrs[key])
    raise spec.fail(f"a constant given as {', '.join(spec.attrs) or 'nothing'} is not supported")


OPS["Constant"] = lambda spec: identity  # evaluated when the plan is built; see constant_value


@register("DepthToSpace")
def _depth_to_space(spec: NodeSpec) -> OpFn:
    block, crd = int(spec.attr("blocksize")), spec.attr("mode", "DCR") == "CRD"

    def depth_to_space(x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if crd:
            return F.pixel_shuffle(x, block)  # torch's pixel shuffle is the CRD order
        y = x.reshape(n, block, block, c // block**2, h, w).permute(0, 3, 4, 1, 5, 2)
        return y.reshape(n, c // block**2, h * block, w * block)

    return depth_to_space


@register("SpaceToDepth")
def _space_to_depth(spec: NodeSpec) -> OpFn:
    block = int(spec.attr("blocksize"))

    def space_to_depth(x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        y = x.reshape(n, c, h // block, block, w // block, block).permute(0, 3, 5, 1, 2, 4)
        return y.reshape(n, c * block * block, h // block, w // block)

    return space_to_depth
