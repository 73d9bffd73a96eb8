"""Weight scales and zero points computed vectorized, exactly as onnxruntime's quantizer computes them.

onnxruntime's `QDQQuantizer` computes a weight's scale and zero point in Python, one channel at a time
(`quant_utils.compute_data_quant_params` → `compute_scale_zp`), which dominates a re-quantization
whose calibration is cached. Here the same arithmetic runs on all channels at once — the same numpy
operations in the same dtypes (float32 ranges, float64 scale, the `finfo(float32).tiny` rule, rounding
to the zero point's integer type) — and the result goes to the quantizer as explicit "scale" and
"zero_point" TensorQuantOverrides, which it takes as they are. Weights this cannot reproduce exactly
(not float32, empty, not finite, other types) return None and are left to onnxruntime.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import QuantType
from onnxruntime.quantization.quant_utils import get_qmin_qmax_for_qType

from slimscope.core.layers import tensor_array

ENABLED = True  # False: leave every weight's scale and zero point to onnxruntime (tests compare both)

# Types whose path through `compute_data_quant_params` is reproduced here (and checked byte for byte).
_TYPES = (QuantType.QInt8, QuantType.QInt16)


def scale_zp_override(
    tensor: onnx.TensorProto,
    quant_type: QuantType,
    symmetric: bool,
    axis: int | None,
    memo: dict[tuple, tuple[np.ndarray, np.ndarray] | None],
) -> list[dict[str, Any]] | None:
    """TensorQuantOverrides fixing `tensor`'s scale and zero point (per channel along `axis`, or one for
    the tensor) as onnxruntime would compute them without reduce_range or MinimumRealRange, or None.

    `memo` holds earlier results by (tensor name, type, symmetry, axis); give one per model (the
    calibration cache keeps one per prepared model), so a repeat run computes nothing.
    """
    if not ENABLED or quant_type not in _TYPES or tensor.data_type != onnx.TensorProto.FLOAT:
        return None
    key = (tensor.name, quant_type, symmetric, axis)
    if key not in memo:
        memo[key] = compute_scale_zp(tensor_array(tensor), quant_type, symmetric, axis)
    found = memo[key]
    if found is None:
        return None
    zero_points, scales = found
    head: dict[str, Any] = {"quant_type": quant_type, **({"axis": axis} if axis is not None else {})}
    channels = [
        {"scale": s, "zero_point": z} for s, z in zip(scales.tolist(), zero_points.tolist(), strict=True)
    ]
    channels[0] = head | channels[0]
    return channels


def compute_scale_zp(
    weight: np.ndarray, quant_type: QuantType, symmetric: bool, axis: int | None
) -> tuple[np.ndarray, np.ndarray] | None:
    """(zero points, scales), one per channel along `axis` (one in all when None), equal to what
    `compute_data_quant_params(channel.ravel(), quant_type.tensor_type, symmetric)` returns for each
    channel; None for a weight that is empty or not finite."""
    values = np.asarray(weight)
    if values.dtype != np.float32 or values.size == 0:
        return None
    if axis is None:
        rows = values.reshape(1, -1)
    else:
        rows = np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
        if rows.shape[1] == 0:
            return None
    rmin, rmax = rows.min(axis=1), rows.max(axis=1)  # float32, as data.min() / data.max()
    if not (np.isfinite(rmin).all() and np.isfinite(rmax).all()):
        return None  # onnxruntime asserts or produces inf/nan scales; let it
    qmin, qmax = get_qmin_qmax_for_qType(quant_type.tensor_type, False, symmetric=symmetric)
    # compute_scale_zp, elementwise:
    rmin = np.minimum(rmin, np.array(0, dtype=rmin.dtype))
    rmax = np.maximum(rmax, np.array(0, dtype=rmax.dtype))
    if symmetric:
        absmax = np.maximum(np.abs(rmin), np.abs(rmax))
        rmin, rmax = -absmax, +absmax
    dr = rmax.astype(np.float64) - rmin.astype(np.float64)
    dq = np.array(qmax, dtype=np.float64) - np.array(qmin, dtype=np.float64)
    scale = dr / dq
    tiny = scale < np.finfo(np.float32).tiny
    if symmetric:
        zero = np.round((qmin + qmax) / np.array(2.0, dtype=np.float64))
        zero = np.full(scale.shape, zero, dtype=np.float64)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):  # tiny scales are replaced below
            zero = np.round(qmin - rmin / scale)
    zero_points = np.where(tiny, 0.0, zero).astype(qmin.dtype)
    scales = np.where(tiny, np.float32(1.0), scale.astype(np.float32)).astype(np.float32)
    return zero_points, scales
