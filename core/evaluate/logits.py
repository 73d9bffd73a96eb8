"""What an output's SQNR is measured on: the output itself, or the logits before a final Softmax/Sigmoid.

A probability saturates: two models whose logits differ by several units can both give 0.999 for the top
class, and a model whose logits are noise can still give near-uniform probabilities whose squared error is
tiny next to their squared size, or the reverse, 0 dB for a model that agrees on every sample (measured on
a SqueezeNet with a softmax output). The logits are what carry the information, so where an output is the
result of a Softmax or Sigmoid (through shape-only ops such as Reshape, Transpose or a QDQ pair), the
evaluation copies of both models expose the tensor before it as an extra output and SQNR and cosine compare
that instead. The user's models are never changed: the extra outputs live only in the evaluation sessions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

PROBABILITY_OPS = frozenset({"Softmax", "Sigmoid"})
# Ops that pass a value through without mixing its elements: the search walks back through them.
_PASS_THROUGH = frozenset(
    {
        "Identity",
        "Reshape",
        "Transpose",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "QuantizeLinear",
        "DequantizeLinear",
    }
)
_MAX_STEPS = 8


def probability_inputs(model: onnx.ModelProto) -> dict[int, tuple[str, str]]:
    """Output index → (the tensor before its final Softmax/Sigmoid, that op's type), for each output that
    is a probability; outputs that are not are absent."""
    producers = {name: node for node in model.graph.node for name in node.output if name}
    found = {}
    for index, output in enumerate(model.graph.output):
        node = producers.get(output.name)
        for _ in range(_MAX_STEPS):
            if node is None or not node.input:
                break
            if node.op_type in PROBABILITY_OPS and node.domain in ("", "ai.onnx"):
                found[index] = (node.input[0], node.op_type)
                break
            if node.op_type not in _PASS_THROUGH:
                break
            node = producers.get(node.input[0])
    return found


@dataclass(frozen=True)
class MeasuredOutputs:
    """Which tensors SQNR compares. `extra[role]` are the tensors to add to that model's evaluation session;
    `substitutes[i]` is the position, among that session's outputs, of the tensor standing in for output i
    (the same position in both models)."""

    extra: dict[str, tuple[str, ...]] = field(default_factory=lambda: {"original": (), "optimized": ()})
    substitutes: dict[int, int] = field(default_factory=dict)
    ops: tuple[str, ...] = ()  # the probability ops measured before, for the description
    partial: bool = False  # some outputs are measured as they are

    @property
    def description(self) -> str:
        """What SQNR was measured on, in words: "the outputs" or "the logits before Softmax"."""
        if not self.substitutes:
            return "the outputs"
        text = f"the logits before {' and '.join(self.ops)}"
        return text + " and the other outputs" if self.partial else text

    def split(self, outputs: list[np.ndarray], count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(the model's own `count` outputs, the arrays SQNR compares in their place)."""
        visible = outputs[:count]
        measured = list(visible)
        for index, position in self.substitutes.items():
            measured[index] = outputs[position]
        return visible, measured


def plan_measured_outputs(original: onnx.ModelProto, optimized: onnx.ModelProto) -> MeasuredOutputs:
    """Measure the logits wherever both models end the same output in a Softmax/Sigmoid."""
    found = [probability_inputs(model) for model in (original, optimized)]
    common = sorted(
        index for index in found[0] if index in found[1] and found[0][index][1] == found[1][index][1]
    )
    if not common:
        return MeasuredOutputs()
    extra: dict[str, tuple[str, ...]] = {}
    positions: list[dict[int, int]] = []
    for role, model, inputs in (("original", original, found[0]), ("optimized", optimized, found[1])):
        outputs = [output.name for output in model.graph.output]
        names: list[str] = []
        where = {}
        for index in common:
            tensor = inputs[index][0]
            if tensor in outputs:
                where[index] = outputs.index(tensor)
                continue
            if tensor not in names:
                names.append(tensor)
            where[index] = len(outputs) + names.index(tensor)
        extra[role] = tuple(names)
        positions.append(where)
    if positions[0] != positions[1]:  # the two sessions would return them in different places
        return MeasuredOutputs()
    ops = tuple(dict.fromkeys(found[0][index][1] for index in common))
    partial = len(common) < min(len(original.graph.output), len(optimized.graph.output))
    return MeasuredOutputs(extra, positions[0], ops, partial)
