"""`OnnxModule`: an ONNX model run by PyTorch, so that Slimscope can retrain it (gradual pruning with
fine-tuning, quantization-aware training) and write the result back into the same graph.

Written by hand: the well-kept converters (onnx2torch, onnx2pytorch) both require torchvision, which does
not import beside our torch build. The module interprets the graph node by node in topological order
(`onnx_plan.py` prepares the steps once; the ops are in `onnx_ops.py`, `onnx_shape_ops.py`,
`onnx_spatial_ops.py`, `onnx_qdq.py`), with the model's initializers as its parameters and buffers. Training
therefore changes exactly the initializers, and `write_back` returns the source graph, node for node, with
new initializer values: no re-export.

Float weights of Conv, ConvTranspose, Gemm, MatMul (constant operand), the bias Add after a MatMul and
BatchNormalization's scale and bias are parameters; BatchNormalization's running mean and variance are
buffers updated in training mode as torch's BatchNorm does. In a QDQ model every quantized weight and
bias is a float parameter (fake-quantized on the forward pass, re-quantized by `write_back`), and with
`learn_ranges=True` so is every activation scale (learned step size quantization).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, cast

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from slimscope.core.errors import TrainingError
from slimscope.core.train import onnx_qdq
from slimscope.core.train.onnx_ops import OPS, RunState
from slimscope.core.train.onnx_plan import PlanBuilder, QuantizedBias, QuantizedWeight, as_array


class OnnxModule(torch.nn.Module):
    """An ONNX graph run by PyTorch; float weights are trainable parameters."""

    def __init__(self, model: onnx.ModelProto, *, learn_ranges: bool = False):
        super().__init__()
        self._source = onnx.ModelProto()
        self._source.CopyFrom(model)
        input_name = check_model(self._source)
        self._state = RunState()
        plan = PlanBuilder(self._source, input_name, learn_ranges, self._state).build()
        self._plan = plan
        # ONNX names hold dots and other characters torch refuses: attributes are p0, p1, ... and b0, b1, ...
        self._keys: dict[str, tuple[dict[str, Any], str]] = {}
        for i, (name, value) in enumerate(plan.params.items()):
            self.register_parameter(f"p{i}", torch.nn.Parameter(torch.tensor(value)))
            self._keys[name] = (self._parameters, f"p{i}")
        for i, (name, value) in enumerate(plan.buffers.items()):
            self.register_buffer(f"b{i}", torch.tensor(value))
            self._keys[name] = (self._buffers, f"b{i}")
        self._trainable_names = tuple(plan.params)
        plan.params.clear()  # the values live in torch now
        plan.buffers.clear()
        self._slots = [(name, store, key) for name, (store, key) in self._keys.items()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's single data input -> its first output."""
        self._state.training = self.training  # read by BatchNormalization
        self._state.batch = x.shape[0] if x.dim() > 0 else 1
        env: dict[str, Any] = {name: store[key] for name, store, key in self._slots}
        env[self._plan.input] = x if x.dtype == torch.float32 else x.float()
        step = None
        try:
            for step in self._plan.steps:
                out = step.run(*[env[k] if k is not None else None for k in step.inputs])
                if len(step.outputs) == 1:
                    env[step.outputs[0]] = out
                else:
                    for key, value in zip(step.outputs, out, strict=False):
                        if key:
                            env[key] = value
                for key in step.free:
                    del env[key]
        except (RuntimeError, ValueError, IndexError) as error:
            where = f"node '{step.node}' ({step.op_type})" if step else "the model"
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise TrainingError(f"PyTorch could not run {where} on this input: {reason}") from error
        return env[self._plan.output]

    def tensor(self, initializer_name: str) -> torch.Tensor:
        """The parameter or buffer holding an initializer (a quantized weight's or bias's float value)."""
        if initializer_name not in self._keys:
            raise KeyError(f"The model has no initializer named {initializer_name!r}.")
        store, key = self._keys[initializer_name]
        return store[key]

    @property
    def trainable(self) -> dict[str, torch.nn.Parameter]:
        """Initializer name -> parameter: the weights (and learned activation scales) training may change."""
        return {name: cast(torch.nn.Parameter, self.tensor(name)) for name in self._trainable_names}

    @property
    def learned_scales(self) -> frozenset[str]:
        """The activation scales among `trainable` (with `learn_ranges`): they train with other settings."""
        return frozenset(self._plan.learned_scales)

    def write_back(self) -> onnx.ModelProto:
        """A copy of the source model with every initializer replaced by the module's current values.

        Quantized weights are re-quantized with scales recomputed from the trained float weights, their
        biases with (input scale x new weight scale); values that did not change stay byte for byte. The
        nodes stay as they are, but for one case: a value that must change in an initializer other nodes
        also read (a shared scale, a running mean merged with an equal bias) is written under a fresh name,
        and only the node it belongs to reads that.
        """
        out = _Initializers(self._source)
        with torch.no_grad():
            quantized = {*self._plan.weights, *self._plan.biases}
            for name in self._trainable_names:
                if name not in quantized:
                    value = self.tensor(name).detach()
                    if name in self._plan.learned_scales:
                        value = value.clamp_min(onnx_qdq.MIN_SCALE)
                    out.put_if_changed(name, value.numpy())
            for stat in self._plan.running_stats:
                running = self.tensor(stat.key).numpy()
                if stat.own:
                    out.put_if_changed(stat.initializer, running)
                elif not np.array_equal(out.original(stat.initializer), running):
                    tensor = _float_tensor(running, out.originals[stat.initializer])
                    out.rewire(stat.node_index, stat.slot, tensor)
            changed = {
                name: self._requantize_weight(entry, out) for name, entry in self._plan.weights.items()
            }
            for entry in self._plan.biases.values():
                self._requantize_bias(entry, out, changed)
        return out.model()

    def _requantize_weight(self, entry: QuantizedWeight, out: _Initializers) -> bool:
        """Write the weight's new codes and scale, if it changed; whether it did."""
        weight = self.tensor(entry.codes).detach()
        if np.array_equal(weight.numpy(), _initial_value(entry, out.originals)):
            return False
        codes, scale = entry.quantizer.codes(weight)
        out.put(entry.codes, onnx_qdq.codes_tensor(codes, out.originals[entry.codes].data_type, entry.codes))
        out.put(entry.scale, _float_tensor(scale, out.originals[entry.scale]), (entry.node_index, 1))
        return True

    def _requantize_bias(
        self, entry: QuantizedBias, out: _Initializers, weight_changed: dict[str, bool]
    ) -> None:
        """Write the bias's codes and scale (input scale x weight scale, as the forward pass rounds it),
        unless neither it, its layer's weight nor its input scale changed."""
        bias = self.tensor(entry.codes).detach()
        layer = self._plan.weights.get(entry.weight) if entry.weight else None
        input_scale = self.tensor(entry.input_scale).detach() if entry.input_scale else None
        unchanged = (
            np.array_equal(bias.numpy(), _initial_value(entry, out.originals))
            and (layer is None or not weight_changed[layer.codes])
            and (
                input_scale is None
                or np.array_equal(input_scale.numpy(), out.original(entry.input_scale or ""))
            )
        )
        if unchanged:
            return
        if layer is not None and input_scale is not None:
            scale = onnx_qdq.bias_scale(input_scale, layer.quantizer.scale(self.tensor(layer.codes).detach()))
        else:
            scale = torch.from_numpy(onnx_qdq.broadcast(out.original(entry.scale), bias.dim(), entry.axis))
        out.put(
            entry.codes,
            onnx_qdq.codes_tensor(onnx_qdq.bias_codes(bias, scale), TensorProto.INT32, entry.codes),
        )
        out.put(entry.scale, _float_tensor(scale.numpy(), out.originals[entry.scale]), (entry.node_index, 1))


class _Initializers:
    """The initializers `write_back` writes: replaced in place, or under a fresh name read by one node only
    when other nodes read the original too."""

    def __init__(self, source: onnx.ModelProto):
        self.source = source
        self.originals = {t.name: t for t in source.graph.initializer}
        self.readers = Counter(name for node in source.graph.node for name in node.input)
        self.updates: dict[str, onnx.TensorProto] = {}
        self.rewires: list[tuple[int, int, onnx.TensorProto]] = []  # (node index, input slot, tensor)

    def original(self, name: str) -> np.ndarray:
        return as_array(self.originals[name])

    def put(self, name: str, tensor: onnx.TensorProto, reader: tuple[int, int] | None = None) -> None:
        """Write `tensor` as initializer `name`, or, when given the (node index, input slot) it is for and
        other nodes read `name` too, under a fresh name only that input reads."""
        if reader is not None and self.readers[name] > 1:
            self.rewire(*reader, tensor)
        else:
            self.updates[name] = tensor

    def rewire(self, node_index: int, slot: int, tensor: onnx.TensorProto) -> None:
        """Write `tensor` under a fresh name (from its own) and make that node input read it."""
        self.rewires.append((node_index, slot, tensor))

    def put_if_changed(self, name: str, value: np.ndarray, reader: tuple[int, int] | None = None) -> None:
        if not np.array_equal(self.original(name), value):
            self.put(name, _float_tensor(value, self.originals[name]), reader)

    def model(self) -> onnx.ModelProto:
        model = onnx.ModelProto()
        model.CopyFrom(self.source)
        graph = model.graph
        taken = {t.name for t in graph.initializer} | {v.name for v in graph.input}
        taken |= {o for node in graph.node for o in node.output}
        for node_index, slot, tensor in self.rewires:
            fresh, number = f"{tensor.name}_retrained", 1
            while fresh in taken:
                fresh, number = f"{tensor.name}_retrained{number}", number + 1
            taken.add(fresh)
            tensor.name = fresh
            graph.initializer.append(tensor)
            graph.node[node_index].input[slot] = fresh
        for tensor in graph.initializer:
            if tensor.name in self.updates:
                tensor.CopyFrom(self.updates[tensor.name])
        return model


def _initial_value(
    entry: QuantizedWeight | QuantizedBias, originals: dict[str, onnx.TensorProto]
) -> np.ndarray:
    """The float value a quantized initializer had in the source model."""
    zero_point = as_array(originals[entry.zero_point]) if entry.zero_point else None
    codes, scale = as_array(originals[entry.codes]), as_array(originals[entry.scale])
    return onnx_qdq.dequantized(codes, scale, zero_point, entry.axis)


def _float_tensor(value: np.ndarray, original: onnx.TensorProto) -> onnx.TensorProto:
    """`value` as an initializer like `original`: its name, element type and shape (a per-tensor scale
    computed as [1] goes back to a scalar)."""
    shape = tuple(original.dims)
    value = value.reshape(shape) if value.size == int(np.prod(shape)) else np.broadcast_to(value, shape)
    dtype = helper.tensor_dtype_to_np_dtype(original.data_type)
    return numpy_helper.from_array(np.array(value, dtype=dtype), original.name)


def check_model(model: onnx.ModelProto) -> str:
    """The model's one data input, or a TrainingError saying what PyTorch cannot run."""
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise TrainingError(
            f"Retraining needs a model with one data input; this one has {len(inputs)}"
            + (f" ({', '.join(inputs)})." if inputs else ".")
        )
    for node in graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise TrainingError(
                f"Retraining cannot run this model in PyTorch: node '{node.name}' ({node.op_type}) holds a "
                "subgraph, and control flow (If, Loop, Scan) is not supported."
            )
    unsupported: dict[str, str] = {}
    for node in graph.node:
        known = node.domain in ("", "ai.onnx") and node.op_type in OPS
        label = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        if not known:
            unsupported.setdefault(label, node.name)
    if unsupported:
        listed = ", ".join(f"'{op}' (node '{name}')" for op, name in unsupported.items())
        verb = "is" if len(unsupported) == 1 else "are"
        raise TrainingError(
            f"Retraining cannot run this model in PyTorch: op {listed} {verb} not supported; "
            f"supported: {', '.join(sorted(OPS))}."
        )
    return inputs[0]


def to_torch(model: onnx.ModelProto, *, learn_ranges: bool = False) -> OnnxModule:
    """The model as a trainable PyTorch module; a TrainingError names what PyTorch cannot run, before
    anything runs."""
    return OnnxModule(model, learn_ranges=learn_ranges)
