"""The ONNX operators `OnnxModule` runs, written with torch and torch.nn.functional.

`OPS` maps an op type to a factory: it reads a node's attributes once (defaults per the ONNX spec,
opsets 13-21, older forms where they differ) and returns the function `forward` calls with the node's
inputs (None for an omitted optional input). Written by hand because the converters that exist
(onnx2torch, onnx2pytorch) need torchvision, which does not import beside our torch build.
This file holds the registry, elementwise, matrix, normalization and reduction ops; `onnx_shape_ops.py`
the shape ops, `onnx_spatial_ops.py` convolutions, pools, Pad and Resize, `onnx_qdq.py` quantization.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper

from slimscope.core.errors import TrainingError

OpFn = Callable[..., Any]


@dataclass
class RunState:
    """What op functions may read while running: training or evaluation (BatchNormalization), and the
    batch size of the running input."""

    training: bool = False
    batch: int = 1


@dataclass(frozen=True)
class NodeSpec:
    """One node as an op factory sees it."""

    name: str
    op_type: str
    inputs: tuple[str, ...]  # input names ("" for an omitted optional input)
    attrs: dict[str, Any]
    consts: tuple[np.ndarray | None, ...]  # values of constant inputs (initializers, Constant nodes)
    dtypes: tuple[int | None, ...]  # ONNX element types of constant inputs
    opset: int
    n_outputs: int
    state: RunState = field(default_factory=RunState)
    from_input: tuple[bool, ...] = ()  # per input: whether it is computed from the model's data input

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def fail(self, why: str) -> TrainingError:
        return TrainingError(f"Retraining cannot run node '{self.name}' ({self.op_type}) in PyTorch: {why}.")


Factory = Callable[[NodeSpec], OpFn]
OPS: dict[str, Factory] = {}


def register(*op_types: str) -> Callable[[Factory], Factory]:
    def add(factory: Factory) -> Factory:
        for op_type in op_types:
            OPS[op_type] = factory
        return factory

    return add


def read_attributes(node: onnx.NodeProto) -> dict[str, Any]:
    """A node's attributes as Python values (strings decoded, tensors as numpy)."""
    attrs: dict[str, Any] = {}
    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, onnx.TensorProto):
            value = numpy_helper.to_array(value)
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode() for v in value]
        attrs[attribute.name] = value
    return attrs


def ints(value: torch.Tensor | np.ndarray) -> list[int]:
    """A shape-like tensor (shape, axes, pads, starts...) as a list of Python ints."""
    return [int(v) for v in value.reshape(-1).tolist()]


def axis_of(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# --- elementwise -------------------------------------------------------------------------------------


def _div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if a.is_floating_point() or b.is_floating_point():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")  # ONNX integer division truncates


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


_PLAIN: dict[str, OpFn] = {
    "Relu": F.relu,
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "Sqrt": torch.sqrt,
    "Neg": torch.neg,
    "Abs": torch.abs,
    "Exp": torch.exp,
    "Log": torch.log,
    "Erf": torch.erf,
    "Floor": torch.floor,
    "Ceil": torch.ceil,
    "Reciprocal": torch.reciprocal,
    "Sign": torch.sign,
    "Not": torch.logical_not,
    "HardSwish": F.hardswish,  # ONNX HardSwish is x * clip(x/6 + 1/2, 0, 1), torch's exactly
    "Softplus": F.softplus,
    "Identity": identity,
    "Add": torch.add,
    "Sub": torch.sub,
    "Mul": torch.mul,
    "Div": _div,
    "Pow": torch.pow,
    "MatMul": torch.matmul,
    "Equal": torch.eq,
    "Less": torch.lt,
    "LessOrEqual": torch.le,
    "Greater": torch.gt,
    "GreaterOrEqual": torch.ge,
    "And": torch.logical_and,
    "Or": torch.logical_or,
}


def _fixed(function: OpFn) -> Factory:
    """The factory of an op with no attributes: always the same function."""
    return lambda spec: function


OPS.update({op_type: _fixed(function) for op_type, function in _PLAIN.items()})


def _variadic(combine: OpFn, finish: Callable[[torch.Tensor, int], torch.Tensor] | None = None) -> Factory:
    def factory(spec: NodeSpec) -> OpFn:
        def run(*xs: torch.Tensor) -> torch.Tensor:
            out = functools.reduce(combine, xs)
            return finish(out, len(xs)) if finish else out

        return run

    return factory


OPS["Min"] = _variadic(torch.minimum)
OPS["Max"] = _variadic(torch.maximum)
OPS["Sum"] = _variadic(torch.add)
OPS["Mean"] = _variadic(torch.add, lambda total, count: total / count)


@register("Dropout")
def _dropout(spec: NodeSpec) -> OpFn:
    if spec.n_outputs > 1:
        raise spec.fail("its mask output is used")
    return identity


@register("LeakyRelu")
def _leaky_relu(spec: NodeSpec) -> OpFn:
    slope = float(spec.attr("alpha", 0.01))
    return lambda x: F.leaky_relu(x, slope)


@register("Elu")
def _elu(spec: NodeSpec) -> OpFn:
    alpha = float(spec.attr("alpha", 1.0))
    return lambda x: F.elu(x, alpha)


@register("PRelu")
def _prelu(spec: NodeSpec) -> OpFn:
    return lambda x, slope: torch.where(x >= 0, x, x * slope)  # numpy broadcasting, as ONNX


@register("HardSigmoid")
def _hard_sigmoid(spec: NodeSpec) -> OpFn:
    alpha, beta = float(spec.attr("alpha", 0.2)), float(spec.attr("beta", 0.5))
    return lambda x: torch.clamp(x * alpha + beta, 0.0, 1.0)


@register("Gelu")
def _gelu(spec: NodeSpec) -> OpFn:
    approximate = spec.attr("approximate", "none")
    return lambda x: F.gelu(x, approximate=approximate)


@register("Clip")
def _clip(spec: NodeSpec) -> OpFn:
    if spec.opset < 11:
        return _fixed_clip(spec.attr("min"), spec.attr("max"))
    given = [slot < len(spec.inputs) and spec.inputs[slot] != "" for slot in (1, 2)]
    consts = [spec.consts[slot] if present else None for slot, present in zip((1, 2), given, strict=True)]
    if all(c is not None or not present for c, present in zip(consts, given, strict=True)):
        return _fixed_clip(*(float(c) if c is not None else None for c in consts))
    return lambda x, low=None, high=None: torch.clamp(x, low, high)


def _fixed_clip(low: float | None, high: float | None) -> OpFn:
    """Clip to constant bounds; F.hardtanh when both are given (ReLU6), one kernel forward and backward."""
    if low is None and high is None:
        return lambda x, *_: x
    if low is not None and high is not None and low < high:
        return lambda x, *_: F.hardtanh(x, low, high) if x.is_floating_point() else torch.clamp(x, low, high)
    return lambda x, *_: torch.clamp(x, low, high)


def _softmax_like(function: OpFn) -> Factory:
    def factory(spec: NodeSpec) -> OpFn:
        if spec.opset >= 13:
            axis = int(spec.attr("axis", -1))
            return lambda x: function(x, dim=axis)
        axis = int(spec.attr("axis", 1))  # opsets < 13 coerce to 2-D at `axis`

        def coerced(x: torch.Tensor) -> torch.Tensor:
            rows = math.prod(x.shape[: axis_of(axis, x.dim())])
            return function(x.reshape(rows, -1), dim=1).reshape(x.shape)

        return coerced

    return factory


OPS["Softmax"] = _softmax_like(torch.softmax)
OPS["LogSoftmax"] = _softmax_like(torch.log_softmax)


@register("Where")
def _where(spec: NodeSpec) -> OpFn:
    return lambda condition, a, b: torch.where(condition.bool(), a, b)


_TORCH_DTYPES: dict[int, torch.dtype] = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.DOUBLE: torch.float32,  # float32 compute throughout
    onnx.TensorProto.FLOAT16: torch.float32,
    onnx.TensorProto.BFLOAT16: torch.float32,
    onnx.TensorProto.BOOL: torch.bool,
}


def torch_dtype(onnx_type: int) -> torch.dtype:
    """The dtype a tensor of an ONNX element type is computed in: float32, int64 or bool."""
    return _TORCH_DTYPES.get(onnx_type, torch.int64)


@register("Cast")
def _cast(spec: NodeSpec) -> OpFn:
    dtype = torch_dtype(int(spec.attr("to")))
    return lambda x: x.to(dtype)


@register("CastLike")
def _cast_like(spec: NodeSpec) -> OpFn:
    return lambda x, like: x.to(like.dtype)


# --- matrix and normalization ops --------------------------------------------------------------------


@register("Gemm")
def _gemm(spec: NodeSpec) -> OpFn:
    alpha, beta = float(spec.attr("alpha", 1.0)), float(spec.attr("beta", 1.0))
    trans_a, trans_b = bool(spec.attr("transA", 0)), bool(spec.attr("transB", 0))
    if not trans_a and trans_b and alpha == 1.0 and beta == 1.0:
        return lambda a, b, c=None: F.linear(a, b, c)  # the common case, one fused call

    def gemm(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        out = (a.t() if trans_a else a) @ (b.t() if trans_b else b)
        out = out * alpha if alpha != 1.0 else out
        return out if c is None else out + (c * beta if beta != 1.0 else c)

    return gemm


@register("Einsum")
def _einsum(spec: NodeSpec) -> OpFn:
    equation = spec.attr("equation")
    return lambda *xs: torch.einsum(equation, *xs)


@register("BatchNormalization")
def _batch_norm(spec: NodeSpec) -> OpFn:
    if spec.n_outputs > 1:
        raise spec.fail("its running-statistics outputs are used")
    eps = float(spec.attr("epsilon", 1e-5))
    # ONNX: running = running * momentum + batch * (1 - momentum); torch's momentum is the batch's share.
    momentum = 1.0 - float(spec.attr("momentum", 0.9))
    state = spec.state

    def batch_norm(
        x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor, var: torch.Tensor
    ) -> torch.Tensor:
        return F.batch_norm(x, mean, var, scale, bias, state.training, momentum, eps)

    return batch_norm


@register("InstanceNormalization")
def _instance_norm(spec: NodeSpec) -> OpFn:
    eps = float(spec.attr("epsilon", 1e-5))
    return lambda x, scale, bias: F.instance_norm(x, weight=scale, bias=bias, eps=eps)


@register("LayerNormalization")
def _layer_norm(spec: NodeSpec) -> OpFn:
    if spec.n_outputs > 1:
        raise spec.fail("its mean and inverse standard deviation outputs are used")
    axis, eps = int(spec.attr("axis", -1)), float(spec.attr("epsilon", 1e-5))

    def layer_norm(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        dims = x.shape[axis_of(axis, x.dim()) :]
        if scale.shape == dims and (bias is None or bias.shape == dims):
            return F.layer_norm(x, dims, scale, bias, eps)
        out = F.layer_norm(x, dims, None, None, eps) * scale  # scale and bias broadcast
        return out if bias is None else out + bias

    return layer_norm


# --- reductions --------------------------------------------------------------------------------------


def _reduce(function: OpFn, axes_input_since: int) -> Factory:
    def factory(spec: NodeSpec) -> OpFn:
        keepdims = bool(spec.attr("keepdims", 1))
        noop_if_empty = bool(spec.attr("noop_with_empty_axes", 0))
        attr_axes = spec.attr("axes") if spec.opset < axes_input_since else None

        def reduce(x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
            dims = list(attr_axes) if attr_axes is not None else (ints(axes) if axes is not None else [])
            if not dims:
                if noop_if_empty:
                    return x
                dims = list(range(x.dim()))
            return function(x, dim=dims, keepdim=keepdims)

        return reduce

    return factory


OPS["ReduceMean"] = _reduce(torch.mean, 18)
OPS["ReduceSum"] = _reduce(torch.sum, 13)
OPS["ReduceMax"] = _reduce(torch.amax, 18)
OPS["ReduceMin"] = _reduce(torch.amin, 18)


@register("ArgMax", "ArgMin")
def _arg_max(spec: NodeSpec) -> OpFn:
    if spec.attr("select_last_index", 0):
        raise spec.fail("select_last_index is not supported")
    axis, keepdims = int(spec.attr("axis", 0)), bool(spec.attr("keepdims", 1))
    function = torch.argmax if spec.op_type == "ArgMax" else torch.argmin
    return lambda x: function(x, dim=axis, keepdim=keepdims)
