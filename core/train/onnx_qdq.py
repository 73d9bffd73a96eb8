"""Quantization in `OnnxModule`: QDQ models (onnxruntime's QuantizeLinear / DequantizeLinear format) run as
fake quantization, so quantization-aware training sees the rounding the int8 model will do.

- A weight (integer initializer -> DequantizeLinear) is trained as its float value and fake-quantized on
  every forward with a scale recomputed from the current float weight: per channel, the smallest scale
  that maps the channel into the integer range without clipping, zero point kept. For onnxruntime's
  symmetric weights (codes ±127 for int8, ±(2^(b-1)-1) for Slimscope's simulated b-bit widths, -8..7
  for int4) this is the scale onnxruntime chose, so a converted model that is not trained re-quantizes
  to exactly the same integers. Zero stays zero (pruned weights stay pruned).
- An activation QuantizeLinear -> DequantizeLinear pair is fake quantization with straight-through
  gradients; with learned ranges its scale is trained with LSQ (below).
- A lone QuantizeLinear returns the integer codes (as floats, rounded with a straight-through
  estimator); a lone DequantizeLinear maps codes back, so any arrangement of the two runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from slimscope.core.train.onnx_ops import NodeSpec, OpFn, axis_of, register

# The integer range of each quantized type (the zero point's type says which).
CODE_RANGES: dict[int, tuple[int, int]] = {
    TensorProto.UINT8: (0, 255),
    TensorProto.INT8: (-128, 127),
    TensorProto.UINT16: (0, 65535),
    TensorProto.INT16: (-32768, 32767),
    TensorProto.UINT4: (0, 15),
    TensorProto.INT4: (-8, 7),
    TensorProto.INT32: (-(2**31), 2**31 - 1),
}
# onnxruntime's symmetric weights leave out the most negative code (quant_utils'
# ONNX_INT_TYPE_SYMMETRIC_RANGE); int4 has no such entry and uses -8..7.
_SYMMETRIC_RANGES: dict[int, tuple[int, int]] = {
    TensorProto.INT8: (-127, 127),
    TensorProto.INT16: (-32767, 32767),
}
_BITS: dict[int, int] = {TensorProto.INT8: 8, TensorProto.INT16: 16}
MIN_SCALE = 1e-12  # a learned scale never reaches zero
_TINY = float(np.finfo(np.float32).tiny)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even, with the gradient of the identity (straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def gradient_scaled(value: torch.Tensor, factor: float) -> torch.Tensor:
    """`value` unchanged, its gradient multiplied by `factor`."""
    return value * factor + (value - value * factor).detach()


def lsq_gradient_factor(x: torch.Tensor, high: int) -> float:
    """LSQ's step-size gradient scale 1/sqrt(N_F * qmax), with N_F the layer's features per sample (numel /
    batch: the loss already averages over the batch)."""
    features = x[0].numel() if x.dim() > 1 else x.numel()
    return 1.0 / math.sqrt(max(features * high, 1))


def lsq_step(scale: torch.Tensor, x: torch.Tensor, high: int) -> torch.Tensor:
    """A learned scale as LSQ uses it: kept positive, its gradient scaled."""
    return gradient_scaled(scale.clamp_min(MIN_SCALE), lsq_gradient_factor(x, high))


class _LearnedStepQuantize(torch.autograd.Function):
    """Learned step size quantization (Esser et al. 2019, "Learned Step Size Quantization"), written by hand
    (torch's learnable fake quantizer is a private op): x / s, rounded with a straight-through estimator,
    clamped, times s. Forward and backward are spelled out so that an activation is read a few times,
    not once per elementwise op as autograd through the same expression would."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, scale: torch.Tensor, zero_point: float, low: int, high: int, factor: float
    ) -> torch.Tensor:
        step = scale.clamp_min(MIN_SCALE)
        ctx.save_for_backward(x, step)
        ctx.constants = (zero_point, low, high, factor)
        return (x / step).round_().add_(zero_point).clamp_(low, high).sub_(zero_point).mul_(step)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, step = ctx.saved_tensors
        zero_point, low, high, factor = ctx.constants
        ratio = x / step
        rounded = ratio.round()
        codes = rounded + zero_point
        below, above = codes < low, codes > high
        inside = ~(below | above)
        # d out / d s: round(x/s) - x/s inside the range, the end code (minus the zero point) outside it.
        slope = torch.where(below, low - zero_point, torch.where(above, high - zero_point, rounded - ratio))
        grad_scale = (grad * slope).sum() * factor
        return grad * inside, grad_scale.reshape(step.shape), None, None, None, None


def lsq_fake_quantize(
    x: torch.Tensor, scale: torch.Tensor, zero_point: float, low: int, high: int
) -> torch.Tensor:
    """LSQ fake quantization of an activation with a learned per-tensor scale (see _LearnedStepQuantize)."""
    return _LearnedStepQuantize.apply(x, scale, zero_point, low, high, lsq_gradient_factor(x, high))


def along_axis(value: torch.Tensor, x: torch.Tensor, axis: int) -> torch.Tensor:
    """A per-axis scale or zero point shaped to broadcast against `x` (a scalar stays as it is)."""
    if value.dim() != 1 or x.dim() <= 1:
        return value
    shape = [1] * x.dim()
    shape[axis_of(axis, x.dim())] = -1
    return value.reshape(shape)


def code_range(spec: NodeSpec) -> tuple[int, int]:
    """The integer range of a QuantizeLinear's output: its zero point's type (uint8 without one)."""
    zero_point_type = spec.dtypes[2] if len(spec.dtypes) > 2 else None
    data_type = zero_point_type or int(spec.attr("output_dtype", 0)) or TensorProto.UINT8
    if data_type not in CODE_RANGES:
        raise spec.fail(f"quantization to {TensorProto.DataType.Name(data_type)} is not supported")
    return CODE_RANGES[data_type]


@register("QuantizeLinear")
def _quantize_linear(spec: NodeSpec) -> OpFn:
    if spec.attr("block_size", 0):
        raise spec.fail("blocked quantization is not supported")
    low, high, axis = *code_range(spec), int(spec.attr("axis", 1))

    def quantize(
        x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None = None
    ) -> torch.Tensor:
        if scale.requires_grad:  # a learned range: LSQ's gradient scale
            scale = lsq_step(scale, x, high)
        offset = 0.0 if zero_point is None else along_axis(zero_point, x, axis).float()
        return torch.clamp(round_ste(x / along_axis(scale, x, axis)) + offset, low, high)

    return quantize


@register("DequantizeLinear")
def _dequantize_linear(spec: NodeSpec) -> OpFn:
    if spec.attr("block_size", 0):
        raise spec.fail("blocked quantization is not supported")
    axis = int(spec.attr("axis", 1))

    high = code_range(spec)[1]

    def dequantize(
        codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None = None
    ) -> torch.Tensor:
        if scale.requires_grad:
            scale = lsq_step(scale, codes, high)
        offset = 0.0 if zero_point is None else along_axis(zero_point, codes, axis).float()
        return (codes.float() - offset) * along_axis(scale, codes, axis)

    return dequantize


def activation_fake_quantizer(zero_point: np.ndarray, zero_point_type: int, learned: bool) -> OpFn:
    """The function a fused QuantizeLinear -> DequantizeLinear pair runs: (x, scale) -> fake-quantized x."""
    low, high = CODE_RANGES[zero_point_type]
    if learned:
        offset = float(zero_point.reshape(-1)[0])
        return lambda x, scale: lsq_fake_quantize(x, scale, offset, low, high)
    fixed = torch.tensor(int(zero_point.reshape(-1)[0]), dtype=torch.int32)
    return lambda x, scale: torch.fake_quantize_per_tensor_affine(x, scale, fixed, low, high)


@dataclass
class WeightQuantizer:
    """How one quantized weight is fake-quantized: its channel axis (None: one scale for the tensor), its
    integer range, its (fixed) zero points and how the source model's scales relate to the smallest ones."""

    axis: int | None
    low: int
    high: int
    zero_point: torch.Tensor  # int32, one per channel (or one)
    ratio: torch.Tensor  # float64, per channel: source scale / smallest scale of the source weight

    def scale(self, weight: torch.Tensor) -> torch.Tensor:
        """The scale of each channel, recomputed from its current values (float64 product, so that an
        untrained weight gets its source scale back to the last bit)."""
        return (self.smallest_scale(weight).double() * self.ratio).float()

    def smallest_scale(self, weight: torch.Tensor) -> torch.Tensor:
        """Per channel, the smallest scale holding the channel's values in [low, high] around its zero point."""
        with torch.no_grad():
            rows = weight.movedim(self.axis, 0) if self.axis is not None else weight.reshape(1, -1)
            rows = rows.reshape(rows.shape[0], -1)
            top, bottom = rows.amax(dim=1).clamp_min(0), rows.amin(dim=1).clamp_max(0)
            zero = self.zero_point.float()
            up, down = self.high - zero, self.low - zero
            scale = torch.maximum(
                torch.where(up > 0, top / up.clamp_min(1), 0.0),
                torch.where(down < 0, bottom / down.clamp_max(-1), 0.0),
            )
            # onnxruntime's rule for an all-zero channel: scale 1.
            return torch.where(scale < _TINY, 1.0, scale)

    def __call__(self, weight: torch.Tensor) -> torch.Tensor:
        scale = self.scale(weight)
        if self.axis is None:
            return torch.fake_quantize_per_tensor_affine(weight, scale, self.zero_point, self.low, self.high)
        return torch.fake_quantize_per_channel_affine(
            weight, scale, self.zero_point, self.axis, self.low, self.high
        )

    def codes(self, weight: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(integer codes, scales) of `weight`, rounded as the forward's fake quantization rounds."""
        with torch.no_grad():
            scale, zero = self.scale(weight), self.zero_point
            inverse = 1.0 / scale  # torch's fake quantization multiplies by the inverse scale
            if self.axis is not None:
                inverse, zero = along_axis(inverse, weight, self.axis), along_axis(zero, weight, self.axis)
            codes = torch.clamp(torch.round(weight * inverse) + zero, self.low, self.high)
        return codes.to(torch.int64).numpy(), scale.numpy()


def weight_quantizer(
    codes: np.ndarray, data_type: int, scale: np.ndarray, zero_point: np.ndarray, axis: int | None
) -> WeightQuantizer:
    """The quantizer reproducing a quantized weight (codes, scale, zero point along `axis`, None: one for
    the tensor) exactly when it is not trained.

    Its range is the narrowest the codes fit in, so int8 codes of Slimscope's simulated narrower widths
    keep their width (native weights always reach their range's end). onnxruntime's int8 scales are the
    smallest holding the channel (absmax / 127); its int4 scales are absmax / 7.5, whose end code rounds to
    -8 or 7 or, by float rounding, not at all, so the smallest scale of the dequantized codes can be 7/8 of
    it: that ratio is kept per channel (1 for all-zero channels, ~1 for int8).
    """
    low, high = CODE_RANGES[data_type]
    wide = codes.astype(np.int64)
    if data_type in _SYMMETRIC_RANGES and not zero_point.any():
        bits = max(2, int(np.abs(wide).max(initial=0)).bit_length() + 1)
        low, high = (
            (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1)
            if bits < _BITS[data_type]
            else _SYMMETRIC_RANGES[data_type]
        )
    elif data_type == TensorProto.INT8:
        bits = max(2, int(max(-wide.min(initial=0) - 1, wide.max(initial=0))).bit_length() + 1)
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    zero = torch.from_numpy(zero_point.astype(np.int32).reshape(-1 if axis is not None else ()))
    quantizer = WeightQuantizer(axis, low, high, zero, torch.ones((), dtype=torch.float64))
    weight = torch.from_numpy(dequantized(codes, scale, zero_point, axis or 0))
    smallest = quantizer.smallest_scale(weight)
    ratio = torch.from_numpy(scale.astype(np.float64).reshape(-1)) / smallest.double()
    rows = weight.movedim(axis, 0) if axis is not None else weight.reshape(1, -1)
    all_zero = (rows.reshape(len(smallest), -1) == 0).all(dim=1)
    quantizer.ratio = torch.where(all_zero, 1.0, ratio)
    return quantizer


def dequantized(codes: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int) -> np.ndarray:
    """DequantizeLinear in numpy, float32 as onnxruntime computes it: (codes - zero point) * scale."""
    shift = codes.astype(np.int64) - (0 if zero_point is None else broadcast(zero_point, codes.ndim, axis))
    return (shift.astype(np.float32) * broadcast(scale, codes.ndim, axis)).astype(np.float32)


def broadcast(value: np.ndarray, rank: int, axis: int) -> np.ndarray:
    if value.ndim != 1 or rank <= 1:
        return value
    shape = [1] * rank
    shape[axis_of(axis, rank)] = -1
    return value.reshape(shape)


def bias_fake_quantizer(weight_quantizer: WeightQuantizer) -> OpFn:
    """The function an int32 bias's DequantizeLinear runs: (float bias, the layer's input scale, its float
    weight) -> the bias rounded to multiples of input scale x weight scale, as `write_back` will store it
    (straight-through gradient). Not negligible: with int4 weights a bias step is ~1e-3, and a bias off by
    half of it moved most first-layer activations and a third of the logits by an output step."""

    def fake_quantize_bias(
        bias: torch.Tensor, input_scale: torch.Tensor, weight: torch.Tensor
    ) -> torch.Tensor:
        with torch.no_grad():
            scale = bias_scale(input_scale, weight_quantizer.scale(weight))
            rounded = torch.round(bias / scale) * scale
        return bias + (rounded - bias).detach()

    return fake_quantize_bias


def bias_scale(input_scale: torch.Tensor, weight_scale: torch.Tensor) -> torch.Tensor:
    """An int32 bias's scale, as onnxruntime sets it: input scale x weight scale (float32)."""
    return input_scale.detach().clamp_min(MIN_SCALE) * weight_scale


def bias_codes(bias: torch.Tensor, scale: torch.Tensor) -> np.ndarray:
    """An int32 bias's codes: round(bias / scale) as the forward pass rounds it, zero point 0."""
    low, high = CODE_RANGES[TensorProto.INT32]
    with torch.no_grad():
        return torch.round(bias / scale).clamp(low, high).to(torch.int64).numpy().astype(np.int32)


def codes_tensor(codes: np.ndarray, data_type: int, name: str) -> onnx.TensorProto:
    """An initializer of `data_type` holding `codes` (int4/uint4 packed two to a byte by onnx)."""
    return numpy_helper.from_array(codes.astype(helper.tensor_dtype_to_np_dtype(data_type)), name)
