"""ONNX ops over spatial axes — Conv, ConvTranspose, pools, Pad, Resize/Upsample — registered in
`onnx_ops.OPS`.

torch's convolutions and pools take one symmetric padding per axis; ONNX gives a begin and an end pad
(or SAME_UPPER / SAME_LOWER / VALID, computed from the running input's size). Asymmetric pads are applied
with `F.pad` before the op. Resize computes, per resized axis, the source coordinate of every output
position exactly as the ONNX spec writes it (every coordinate transformation mode, every nearest
rounding mode) and gathers or interpolates along that axis; F.interpolate covers only some of the modes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from slimscope.core.errors import TrainingError
from slimscope.core.train.onnx_ops import NodeSpec, OpFn, axis_of, ints, register

Pairs = list[tuple[int, int]]
PadRule = Callable[[Sequence[int], Sequence[int], Sequence[int], Sequence[int]], Pairs]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG_POOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def padding_rule(spec: NodeSpec) -> PadRule:
    """(spatial sizes, kernel, strides, dilations) -> (begin, end) pad per spatial axis."""
    auto = spec.attr("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        upper = auto == "SAME_UPPER"

        def same(
            sizes: Sequence[int], kernel: Sequence[int], strides: Sequence[int], dils: Sequence[int]
        ) -> Pairs:
            pairs = []
            for size, k, s, d in zip(sizes, kernel, strides, dils, strict=True):
                total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
                begin = total // 2 if upper else total - total // 2  # SAME_UPPER puts the odd pad at the end
                pairs.append((begin, total - begin))
            return pairs

        return same
    pads = spec.attr("pads") if auto != "VALID" else None
    if not pads:
        return lambda sizes, *_: [(0, 0)] * len(sizes)
    fixed = list(zip(pads[: len(pads) // 2], pads[len(pads) // 2 :], strict=True))
    return lambda *_: fixed


def torch_pads(pairs: Pairs) -> list[int]:
    """ONNX (begin, end) pairs of the trailing axes in F.pad's order: last axis first."""
    return [p for pair in reversed(pairs) for p in pair]


def pre_pad(
    x: torch.Tensor, pairs: Pairs, kernel: Sequence[int], value: float = 0.0
) -> tuple[torch.Tensor, Any]:
    """(x, padding) for a torch op that pads symmetrically by at most half its kernel: when the pads are
    asymmetric or larger, x is padded here and the op gets no padding."""
    if all(b == e and b <= k // 2 for (b, e), k in zip(pairs, kernel, strict=True)):
        return x, [b for b, _ in pairs]
    return F.pad(x, torch_pads(pairs), value=value), 0


@register("Conv")
def _conv(spec: NodeSpec) -> OpFn:
    rule, group = padding_rule(spec), int(spec.attr("group", 1))
    strides_attr, dilations_attr = spec.attr("strides"), spec.attr("dilations")

    def conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        n = x.dim() - 2
        strides, dilations = strides_attr or [1] * n, dilations_attr or [1] * n
        pairs = rule(x.shape[2:], w.shape[2:], strides, dilations)
        if all(b_ == e for b_, e in pairs):  # convolutions take any symmetric padding
            return _CONV[n](x, w, b, strides, [p for p, _ in pairs], dilations, group)
        return _CONV[n](F.pad(x, torch_pads(pairs)), w, b, strides, 0, dilations, group)

    return conv


@register("ConvTranspose")
def _conv_transpose(spec: NodeSpec) -> OpFn:
    group, auto = int(spec.attr("group", 1)), spec.attr("auto_pad", "NOTSET")
    strides_attr, dilations_attr = spec.attr("strides"), spec.attr("dilations")
    output_padding_attr, output_shape, pads = (
        spec.attr("output_padding"),
        spec.attr("output_shape"),
        spec.attr("pads"),
    )

    def pad_pairs(
        x: torch.Tensor, kernel: Sequence[int], strides: list[int], dilations: list[int], extra: list[int]
    ) -> Pairs:
        n = len(kernel)
        if output_shape is None and auto not in ("SAME_UPPER", "SAME_LOWER"):
            return list(zip(pads[:n], pads[n:], strict=True)) if pads else [(0, 0)] * n
        target = (
            output_shape[-n:]
            if output_shape is not None
            else [i * s for i, s in zip(x.shape[2:], strides, strict=True)]
        )
        pairs = []
        for size, k, s, d, o, t in zip(x.shape[2:], kernel, strides, dilations, extra, target, strict=True):
            total = s * (size - 1) + o + (k - 1) * d + 1 - t
            head = total // 2 if auto == "SAME_UPPER" else total - total // 2
            pairs.append((head, total - head))
        return pairs

    def conv_transpose(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        n = x.dim() - 2
        strides, dilations = strides_attr or [1] * n, dilations_attr or [1] * n
        extra = list(output_padding_attr or [0] * n)
        pairs = pad_pairs(x, w.shape[2:], strides, dilations, extra)
        if any(p < 0 for pair in pairs for p in pair):
            raise TrainingError(
                f"ConvTranspose node '{spec.name}' asks for an output larger than it computes."
            )
        if all(b_ == e for b_, e in pairs):
            return _CONV_T[n](x, w, b, strides, [p for p, _ in pairs], extra, group, dilations)
        out = _CONV_T[n](x, w, b, strides, 0, extra, group, dilations)
        crop = [slice(begin, out.shape[2 + i] - end) for i, (begin, end) in enumerate(pairs)]
        return out[(slice(None), slice(None), *crop)]

    return conv_transpose


def _pool_geometry(spec: NodeSpec) -> tuple[list[int], list[int], list[int], PadRule, bool]:
    kernel = list(spec.attr("kernel_shape"))
    strides = list(spec.attr("strides") or [1] * len(kernel))
    dilations = list(spec.attr("dilations") or [1] * len(kernel))
    return kernel, strides, dilations, padding_rule(spec), bool(spec.attr("ceil_mode", 0))


@register("MaxPool")
def _max_pool(spec: NodeSpec) -> OpFn:
    if spec.n_outputs > 1:
        raise spec.fail("its indices output is used")
    kernel, strides, dilations, rule, ceil_mode = _pool_geometry(spec)
    pool = _MAX_POOL[len(kernel)]

    def max_pool(x: torch.Tensor) -> torch.Tensor:
        x, padding = pre_pad(x, rule(x.shape[2:], kernel, strides, dilations), kernel, -math.inf)
        return pool(x, kernel, strides, padding, dilations, ceil_mode)

    return max_pool


@register("AveragePool")
def _average_pool(spec: NodeSpec) -> OpFn:
    kernel, strides, dilations, rule, ceil_mode = _pool_geometry(spec)
    if any(d != 1 for d in dilations):
        raise spec.fail("dilated average pooling is not supported")
    include_pad, pool = bool(spec.attr("count_include_pad", 0)), _AVG_POOL[len(kernel)]

    def average_pool(x: torch.Tensor) -> torch.Tensor:
        pairs = rule(x.shape[2:], kernel, strides, dilations)
        padded, padding = pre_pad(x, pairs, kernel)
        if padding != 0 or include_pad:
            return pool(padded, kernel, strides, padding, ceil_mode, include_pad)
        # Asymmetric pads not counted: divide by the share of each window that lies on the input.
        inside = F.pad(torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype), torch_pads(pairs))
        return pool(padded, kernel, strides, 0, ceil_mode, True) / pool(
            inside, kernel, strides, 0, ceil_mode, True
        )

    return average_pool


@register("GlobalAveragePool")
def _global_average_pool(spec: NodeSpec) -> OpFn:
    return lambda x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True)


@register("GlobalMaxPool")
def _global_max_pool(spec: NodeSpec) -> OpFn:
    return lambda x: x.amax(dim=tuple(range(2, x.dim())), keepdim=True)


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


@register("Pad")
def _pad(spec: NodeSpec) -> OpFn:
    mode = spec.attr("mode", "constant")
    if mode not in _PAD_MODES:
        raise spec.fail(f"pad mode '{mode}' is not supported")
    torch_mode, old = _PAD_MODES[mode], spec.opset < 11
    attr_pads, attr_value = spec.attr("pads"), float(spec.attr("value", 0.0))

    def pad(x: torch.Tensor, pads: Any = None, value: Any = None, axes: Any = None) -> torch.Tensor:
        amounts = list(attr_pads) if old else ints(pads)
        fill = attr_value if old or value is None or value.numel() == 0 else float(value.item())
        along = [axis_of(a, x.dim()) for a in ints(axes)] if axes is not None else list(range(x.dim()))
        half = len(amounts) // 2
        by_axis = dict(zip(along, zip(amounts[:half], amounts[half:], strict=True), strict=True))
        first = min((a for a, pair in by_axis.items() if pair != (0, 0)), default=x.dim())
        pairs = [by_axis.get(a, (0, 0)) for a in range(first, x.dim())]
        if not pairs:
            return x
        if torch_mode == "constant":
            return F.pad(x, torch_pads(pairs), value=fill)
        return F.pad(x, torch_pads(pairs), mode=torch_mode)

    return pad


def source_coordinates(out_size: int, in_size: int, scale: float, mode: str) -> torch.Tensor:
    """For each output position along an axis, the input coordinate it samples (ONNX Resize), float32
    as onnxruntime computes it."""
    i = torch.arange(out_size, dtype=torch.float32)
    if mode in ("half_pixel", "pytorch_half_pixel"):
        if mode == "pytorch_half_pixel" and out_size == 1:
            return torch.zeros(1)
        return (i + 0.5) / scale - 0.5
    if mode == "align_corners":
        return i * ((in_size - 1) / (out_size - 1)) if out_size > 1 else torch.zeros(1)
    if mode == "asymmetric":
        return i / scale
    if mode == "tf_half_pixel_for_nn":
        return (i + 0.5) / scale
    if mode == "half_pixel_symmetric":
        offset = in_size / 2 * (1 - out_size / (scale * in_size))
        return offset + (i + 0.5) / scale - 0.5
    raise TrainingError(f"Resize's coordinate transformation mode '{mode}' is not supported.")


_ROUNDING = {
    "round_prefer_floor": lambda v: torch.ceil(v - 0.5),
    "round_prefer_ceil": lambda v: torch.floor(v + 0.5),
    "floor": torch.floor,
    "ceil": torch.ceil,
}


def _resize_axis(x: torch.Tensor, axis: int, plan: tuple[torch.Tensor, ...]) -> torch.Tensor:
    if len(plan) == 1:
        return x.index_select(axis, plan[0])
    low, high, weight = plan
    shape = [1] * x.dim()
    shape[axis] = -1
    weight = weight.reshape(shape)
    return x.index_select(axis, low) * (1 - weight) + x.index_select(axis, high) * weight


@register("Resize", "Upsample")
def _resize(spec: NodeSpec) -> OpFn:
    modern = spec.op_type == "Resize" and spec.opset >= 11
    mode = spec.attr("mode", "nearest")
    coordinates = spec.attr("coordinate_transformation_mode", "half_pixel") if modern else "asymmetric"
    rounding = _ROUNDING.get(spec.attr("nearest_mode", "round_prefer_floor") if modern else "floor")
    if mode not in ("nearest", "linear") or rounding is None:
        raise spec.fail(f"mode '{mode}' is not supported (nearest and linear are)")
    if spec.attr("antialias", 0) or spec.attr("exclude_outside", 0):
        raise spec.fail("antialias and exclude_outside are not supported")
    if spec.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise spec.fail("keep_aspect_ratio_policy other than 'stretch' is not supported")
    attr_axes, attr_scales = spec.attr("axes"), spec.attr("scales")
    plans: dict[tuple[int, int, float], tuple[torch.Tensor, ...]] = {}  # by (input size, output size, scale)

    def plan_axis(in_size: int, out_size: int, scale: float) -> tuple[torch.Tensor, ...]:
        key = (in_size, out_size, scale)
        if key not in plans:
            source = source_coordinates(out_size, in_size, scale, coordinates)
            if mode == "nearest":
                plans[key] = (rounding(source).clamp(0, in_size - 1).long(),)
            else:
                source = source.clamp(0, in_size - 1)
                low = source.floor().long()
                plans[key] = (low, (low + 1).clamp(max=in_size - 1), source - low)
        return plans[key]

    def resize(x: torch.Tensor, *inputs: torch.Tensor | None) -> torch.Tensor:
        given = (*inputs, None, None, None)
        scales_in, sizes_in = (given[1], given[2]) if modern else (given[0], None)
        axes = [axis_of(a, x.dim()) for a in attr_axes] if attr_axes else list(range(x.dim()))
        if sizes_in is not None and sizes_in.numel():
            sizes = ints(sizes_in)
            scales = [size / x.shape[a] for a, size in zip(axes, sizes, strict=True)]
        else:
            scales = [
                float(s) for s in (scales_in.reshape(-1).tolist() if scales_in is not None else attr_scales)
            ]
            sizes = [int(math.floor(x.shape[a] * s)) for a, s in zip(axes, scales, strict=True)]
        for axis, scale, size in zip(axes, scales, sizes, strict=True):
            if size != x.shape[axis] or scale != 1.0:
                x = _resize_axis(x, axis, plan_axis(x.shape[axis], size, scale))
        return x

    return resize
