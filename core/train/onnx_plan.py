"""How `OnnxModule` runs an ONNX graph: which initializers are trained, and the list of steps.

Built once, when the module is made, so that `forward` is a plain loop over prepared steps: each is a
function with the keys of its inputs and outputs and the keys no later step reads (freed at once).
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from slimscope.core.errors import TrainingError
from slimscope.core.model import default_opset
from slimscope.core.train import onnx_qdq, onnx_shape_ops, onnx_spatial_ops  # noqa: F401  (they register ops)
from slimscope.core.train.onnx_ops import OPS, NodeSpec, OpFn, RunState, read_attributes
from slimscope.core.train.onnx_qdq import WeightQuantizer
from slimscope.core.train.onnx_shape_ops import constant_value

FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
# Inputs holding a layer's weights, trained when they are float initializers.
_WEIGHT_SLOTS = {
    "Conv": (1, 2),
    "ConvTranspose": (1, 2),
    "Gemm": (1, 2),
    "MatMul": (0, 1),
    "BatchNormalization": (1, 2),
}


@dataclass(frozen=True)
class Step:
    run: OpFn
    inputs: tuple[str | None, ...]
    outputs: tuple[str, ...]
    node: str
    op_type: str
    free: tuple[str, ...] = ()  # keys no later step reads


@dataclass(frozen=True)
class QuantizedWeight:
    """An integer weight -> DequantizeLinear, trained as its float value."""

    codes: str
    scale: str
    zero_point: str | None
    axis: int
    node_index: int  # of the DequantizeLinear in graph.node
    quantizer: WeightQuantizer


@dataclass(frozen=True)
class QuantizedBias:
    """An int32 bias -> DequantizeLinear of a Conv/ConvTranspose/Gemm, trained as its float value."""

    codes: str
    scale: str
    zero_point: str | None
    axis: int
    node_index: int
    weight: str | None  # codes of the layer's quantized weight
    input_scale: str | None  # scale of the activation the layer reads


@dataclass(frozen=True)
class RunningStat:
    """A BatchNormalization's running mean or variance: a buffer under `key`, which is the initializer's
    name unless the initializer is also read elsewhere (exporters merge equal initializers, so a fresh
    model's running mean can be the same initializer as a BatchNormalization bias, behind an Identity)."""

    @property
    def own(self) -> bool:
        """Whether the node reads the initializer directly and alone (it is updated in place)."""
        return self.key == self.initializer

    key: str
    initializer: str
    node_index: int
    slot: int


@dataclass
class Plan:
    input: str
    output: str
    steps: list[Step]
    params: dict[str, np.ndarray]  # initializer name -> initial float32 value
    buffers: dict[str, np.ndarray]  # the other initializers and Constant nodes' values
    weights: dict[str, QuantizedWeight] = field(default_factory=dict)
    biases: dict[str, QuantizedBias] = field(default_factory=dict)
    learned_scales: list[str] = field(default_factory=list)
    running_stats: list[RunningStat] = field(default_factory=list)


def sorted_nodes(nodes: list[onnx.NodeProto], known: set[str]) -> list[onnx.NodeProto]:
    """The nodes in an order where each runs after the nodes computing its inputs (Kahn's algorithm,
    keeping the file's order where it already is one)."""
    waiting: dict[str, list[int]] = defaultdict(list)
    missing = []
    for i, node in enumerate(nodes):
        needs = {name for name in node.input if name and name not in known}
        missing.append(len(needs))
        for name in needs:
            waiting[name].append(i)
    ready = [i for i, count in enumerate(missing) if count == 0]
    heapq.heapify(ready)
    ordered = []
    while ready:
        i = heapq.heappop(ready)
        ordered.append(nodes[i])
        for name in nodes[i].output:
            for j in waiting.pop(name, []):
                missing[j] -= 1
                if missing[j] == 0:
                    heapq.heappush(ready, j)
    if len(ordered) < len(nodes):
        stuck = next(node for i, node in enumerate(nodes) if missing[i] > 0)
        raise TrainingError(
            f"The model's graph cannot be run in order: node '{stuck.name}' waits for an input nothing computes."
        )
    return ordered


def as_array(tensor: onnx.TensorProto) -> np.ndarray:
    """An initializer as numpy: floats as float32, integers as int64 (int4 unpacked), bools as bool."""
    if tensor.data_type in (TensorProto.STRING, TensorProto.COMPLEX64, TensorProto.COMPLEX128):
        kind = TensorProto.DataType.Name(tensor.data_type).lower()
        raise TrainingError(
            f"Retraining cannot run this model in PyTorch: its initializer '{tensor.name}' holds {kind} values."
        )
    value = numpy_helper.to_array(tensor)
    if tensor.data_type in FLOAT_TYPES:
        return np.array(value, dtype=np.float32)
    return np.array(value, dtype=np.bool_ if tensor.data_type == TensorProto.BOOL else np.int64)


class PlanBuilder:
    """Reads a checked model once: which initializers are parameters, and the steps forward runs."""

    def __init__(self, model: onnx.ModelProto, input_name: str, learn_ranges: bool, state: RunState):
        graph = model.graph
        self.graph, self.input, self.learn_ranges, self.state = graph, input_name, learn_ranges, state
        self.opset = default_opset(model)
        self.inits = {t.name: t for t in graph.initializer}
        # One wrapper object per node, kept: protobuf may hand out a new one on every access, and nodes
        # are told apart by identity below.
        self.all_nodes = list(graph.node)
        self.index = {id(node): i for i, node in enumerate(self.all_nodes)}
        self.nodes = sorted_nodes(self.all_nodes, set(self.inits) | {input_name})
        self.producer = {o: n for n in self.all_nodes for o in n.output if o}
        self.consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = defaultdict(list)
        for node in self.all_nodes:
            for i, name in enumerate(node.input):
                self.consumers[name].append((node, i))
        self.outputs = {o.name for o in graph.output}
        self.arrays = {name: as_array(t) for name, t in self.inits.items()}
        self.renamed: dict[tuple[int, int], str] = {}  # (node id, input slot) -> key read instead
        self.from_input = {input_name}  # values computed from the data input
        for node in self.nodes:
            if any(name in self.from_input for name in node.input):
                self.from_input.update(node.output)
        self.plan = Plan(input_name, graph.output[0].name, [], {}, {})

    def build(self) -> Plan:
        fused = self._find_quantized()
        self._find_float_params()
        plan = self.plan
        quantized = {*plan.weights, *plan.biases}
        for name, value in self.arrays.items():
            if name not in plan.params and name not in quantized:
                plan.buffers[name] = value
        self._make_steps(fused)
        return plan

    # -- which initializers are trained

    def _find_quantized(self) -> dict[int, onnx.NodeProto]:
        """Quantized weights and biases; activation Q -> DQ pairs (by the Q's id: its DQ)."""
        fused: dict[int, onnx.NodeProto] = {}
        for node in self.all_nodes:
            if node.op_type == "DequantizeLinear" and node.input[0] in self.inits:
                self._quantized_initializer(node)
            elif node.op_type in ("QuantizeLinear", "DequantizeLinear") and node.input[0] not in self.inits:
                self._activation_scale(node)
                partner = self._fused_partner(node)
                if partner is not None:
                    fused[id(node)] = partner
        return fused

    def _qparams(self, node: onnx.NodeProto) -> tuple[str, str | None] | None:
        scale = node.input[1]
        zero_point = node.input[2] if len(node.input) > 2 and node.input[2] else None
        if scale not in self.inits or (zero_point is not None and zero_point not in self.inits):
            return None
        return scale, zero_point

    def _quantized_initializer(self, node: onnx.NodeProto) -> None:
        codes, tensor = node.input[0], self.inits[node.input[0]]
        qparams = self._qparams(node)
        readers = self.consumers[codes]
        alone = len(readers) == 1 and readers[0][0] is node and readers[0][1] == 0
        if (
            tensor.data_type in FLOAT_TYPES
            or qparams is None
            or not alone
            or read_attributes(node).get("block_size")
        ):
            return
        scale, zero_point = qparams
        axis = int(read_attributes(node).get("axis", 1))
        scales = self.arrays[scale]
        zeros = self.arrays[zero_point] if zero_point else np.zeros_like(scales, dtype=np.int64)
        rank = self.arrays[codes].ndim
        axis = axis + rank if axis < 0 else axis
        self.plan.params[codes] = onnx_qdq.dequantized(self.arrays[codes], scales, zeros, axis)
        index = self.index[id(node)]
        if tensor.data_type == TensorProto.INT32:
            weight, input_scale = self._bias_layer(node)
            self.plan.biases[codes] = QuantizedBias(
                codes, scale, zero_point, axis, index, weight, input_scale
            )
        else:
            per_axis = axis if scales.size > 1 else None
            quantizer = onnx_qdq.weight_quantizer(
                self.arrays[codes], tensor.data_type, scales, zeros, per_axis
            )
            self.plan.weights[codes] = QuantizedWeight(codes, scale, zero_point, axis, index, quantizer)

    def _bias_layer(self, dq: onnx.NodeProto) -> tuple[str | None, str | None]:
        """For a bias's DequantizeLinear: (the codes of its layer's quantized weight, the scale of the
        activation the layer reads), each None when the layer has none."""
        readers = [
            (c, i) for c, i in self.consumers[dq.output[0]] if c.op_type in ("Conv", "ConvTranspose", "Gemm")
        ]
        if len(readers) != 1 or readers[0][1] != 2:
            return None, None
        layer = readers[0][0]
        weight_dq, input_dq = self.producer.get(layer.input[1]), self.producer.get(layer.input[0])
        weight = (
            weight_dq.input[0] if weight_dq is not None and weight_dq.op_type == "DequantizeLinear" else None
        )
        scale = input_dq.input[1] if input_dq is not None and input_dq.op_type == "DequantizeLinear" else None
        return weight, scale

    def _activation_scale(self, node: onnx.NodeProto) -> None:
        """With learned ranges, a float scale used only by activation Q/DQ nodes becomes a parameter."""
        scale = node.input[1]
        if not self.learn_ranges or scale in self.plan.params or scale not in self.inits:
            return
        users = self.consumers[scale]
        if self.inits[scale].data_type in FLOAT_TYPES and all(
            c.op_type in ("QuantizeLinear", "DequantizeLinear") and i == 1 and c.input[0] not in self.inits
            for c, i in users
        ):
            self.plan.params[scale] = self.arrays[scale]
            self.plan.learned_scales.append(scale)

    def _fused_partner(self, node: onnx.NodeProto) -> onnx.NodeProto | None:
        """The DequantizeLinear a per-tensor activation QuantizeLinear feeds, when it is its only reader and
        uses the same scale and zero point."""
        qparams = self._qparams(node) if node.op_type == "QuantizeLinear" else None
        readers = self.consumers[node.output[0]]
        if qparams is None or len(readers) != 1 or node.output[0] in self.outputs:
            return None
        dq, slot = readers[0]
        if dq.op_type != "DequantizeLinear" or slot != 0 or self._qparams(dq) is None:
            return None
        same = all(
            a == b
            or (a in self.arrays and b in self.arrays and np.array_equal(self.arrays[a], self.arrays[b]))
            for a, b in zip(qparams, self._qparams(dq) or (), strict=True)
        )
        return dq if same and self.arrays[qparams[0]].size == 1 else None

    def _find_float_params(self) -> None:
        params = self.plan.params
        for node in self.all_nodes:
            slots = list(_WEIGHT_SLOTS.get(node.op_type, ()))
            if node.op_type == "Add":  # the bias of a MatMul
                slots = [
                    i for i in (0, 1) if (p := self.producer.get(node.input[1 - i])) and p.op_type == "MatMul"
                ]
            for i in slots:
                name = node.input[i] if i < len(node.input) else ""
                if name in self.inits and self.inits[name].data_type in FLOAT_TYPES:
                    params[name] = self.arrays[name]
            if node.op_type == "BatchNormalization":
                self._running_stats(node)

    def _running_stats(self, node: onnx.NodeProto) -> None:
        """BatchNormalization's running statistics: buffers of their own where the initializer is shared
        or reaches the node through Identity nodes (as the TorchScript exporter writes merged ones)."""
        index = self.index[id(node)]
        for slot in (3, 4):
            name = source = node.input[slot] if slot < len(node.input) else ""
            while source in self.producer and self.producer[source].op_type == "Identity":
                source = self.producer[source].input[0]
            if source not in self.inits:
                continue
            key = (
                name
                if name == source and len(self.consumers[name]) == 1
                else f"{source}#running{index}.{slot}"
            )
            if key != name:
                self.renamed[(id(node), slot)] = key
                self.plan.buffers[key] = self.arrays[source].copy()
            self.plan.running_stats.append(RunningStat(key, source, index, slot))

    # -- steps

    def _make_steps(self, fused: dict[int, onnx.NodeProto]) -> None:
        plan, alias = self.plan, {}
        skipped = {id(dq) for dq in fused.values()}
        for node in self.nodes:
            first = node.input[0] if node.input else ""
            if id(node) in skipped:
                continue
            if node.op_type == "Constant":
                value = constant_value(self._spec(node))
                plan.buffers[node.output[0]] = value.astype(
                    np.float32 if value.dtype.kind == "f" else value.dtype
                )
            elif node.op_type == "DequantizeLinear" and first in plan.biases:
                bias = plan.biases[first]
                if bias.weight in plan.weights and bias.input_scale is not None:
                    run = onnx_qdq.bias_fake_quantizer(plan.weights[bias.weight].quantizer)
                    self._add(run, (first, bias.input_scale, bias.weight), node, node.output)
                else:
                    alias[node.output[0]] = first  # the trained float bias, as it is
            elif node.op_type == "DequantizeLinear" and first in plan.weights:
                self._add(plan.weights[first].quantizer, (first,), node, node.output)
            elif id(node) in fused:
                zero_point = node.input[2] if len(node.input) > 2 and node.input[2] else None
                zeros = self.arrays[zero_point] if zero_point else np.zeros(1, np.int64)
                kind = self.inits[zero_point].data_type if zero_point else TensorProto.UINT8
                run = onnx_qdq.activation_fake_quantizer(zeros, kind, node.input[1] in plan.learned_scales)
                self._add(run, (alias.get(first, first), node.input[1]), node, fused[id(node)].output)
            else:
                inputs = [
                    self.renamed.get((id(node), slot), alias.get(name, name)) if name else None
                    for slot, name in enumerate(node.input)
                ]
                self._add(OPS[node.op_type](self._spec(node)), inputs, node, node.output)
        plan.output = alias.get(plan.output, plan.output)
        self._add_frees()

    def _add(
        self, run: OpFn, inputs: Iterable[str | None], node: onnx.NodeProto, outputs: Iterable[str]
    ) -> None:
        self.plan.steps.append(Step(run, tuple(inputs), tuple(outputs), node.name, node.op_type))

    def _spec(self, node: onnx.NodeProto) -> NodeSpec:
        consts = tuple(
            self.plan.buffers.get(name) if name not in self.plan.params else None for name in node.input
        )
        dtypes = tuple(
            self.inits[name].data_type
            if name in self.inits
            else helper.np_dtype_to_tensor_dtype(self.plan.buffers[name].dtype)
            if name in self.plan.buffers
            else None
            for name in node.input
        )
        attrs = read_attributes(node)
        outputs = len([o for o in node.output if o])
        from_input = tuple(name in self.from_input for name in node.input)
        return NodeSpec(
            node.name,
            node.op_type,
            tuple(node.input),
            attrs,
            consts,
            dtypes,
            self.opset,
            outputs,
            self.state,
            from_input,
        )

    def _add_frees(self) -> None:
        plan = self.plan
        keep = {*plan.params, *plan.buffers, plan.output}
        last: dict[str, int] = {}
        for i, step in enumerate(plan.steps):
            for key in (*step.inputs, *step.outputs):
                if key:
                    last[key] = i
        frees: dict[int, list[str]] = defaultdict(list)
        for key, i in last.items():
            if key not in keep:
                frees[i].append(key)
        plan.steps = [
            Step(s.run, s.inputs, s.outputs, s.node, s.op_type, tuple(frees[i]))
            for i, s in enumerate(plan.steps)
        ]
