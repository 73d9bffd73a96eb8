"""Per-layer error: the SQNR of a layer's output tensor in the optimized model against the original.

As onnxruntime's quantization debugger (`qdq_loss_debug`) does, the tensors are added as extra graph
outputs and both models run on the same samples. In a QDQ model a tensor's value as the next layer sees
it is `<tensor>_DequantizeLinear_Output`, so that name is preferred when it exists. A tensor whose
shape differs (its channels were pruned) or that is gone has no comparable value: its error is None.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from slimscope.core.data.dataset import Dataset
from slimscope.core.evaluate.metrics import sqnr_db
from slimscope.core.evaluate.sessions import ModelRunner, batch_step, batches, create_runner
from slimscope.core.tasks import Progress, Task

PER_LAYER_SAMPLES = 200  # enough for a stable SQNR, few enough to stay quick
PER_LAYER_BATCH = 8  # every intermediate tensor of a batch is held at once: keep batches small
_QDQ_SUFFIX = "_DequantizeLinear_Output"


@dataclass(frozen=True)
class LayerError:
    name: str
    tensor: str
    sqnr_db: float | None
    note: str | None = None  # why sqnr_db is None

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "tensor": self.tensor, "sqnr_db": self.sqnr_db, "note": self.note}


def layer_tensors(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(layer name, output tensor) for every weighted layer, the pairs `iter_layer_errors` takes."""
    from slimscope.core.layers import find_layers

    return [(layer.name, model.graph.node[layer.node_index].output[0]) for layer in find_layers(model, {})]


@dataclass
class _Target:
    layer: str
    tensor: str
    names: tuple[str | None, str | None]  # the tensor's name in the original and the optimized model
    signal: float = 0.0
    noise: float = 0.0
    note: str | None = None

    def result(self) -> LayerError:
        if self.note is not None:
            return LayerError(self.layer, self.tensor, None, self.note)
        return LayerError(self.layer, self.tensor, sqnr_db(self.signal, self.noise))


def iter_layer_errors(
    original: onnx.ModelProto,
    optimized: onnx.ModelProto,
    data: Dataset,
    pairs: list[tuple[str, str]],
    *,
    max_samples: int = PER_LAYER_SAMPLES,
) -> Task[list[LayerError]]:
    """Per-layer SQNR over the first `max_samples` samples of `data` (already fitted to the model)."""
    graphs = [_Graph.of(original), _Graph.of(optimized)]
    targets = [_target(layer, tensor, graphs) for layer, tensor in pairs]
    runners = []
    for role, model, side in (("original", original, 0), ("optimized", optimized, 1)):
        yield Progress(None, f"Preparing per-layer comparison ({role} model)")
        names = dict.fromkeys(t.names[side] for t in targets if t.names[side] is not None)
        runners.append(_runner_with_outputs(model, role, list(names)))  # type: ignore[arg-type]
    x = data.x[:max_samples]
    indices = [_output_indices(runner) for runner in runners]
    for start, batch in batches(x, batch_step(runners, PER_LAYER_BATCH)):
        outputs = [runner.run_all(batch) for runner in runners]
        for target in targets:
            if target.note is None:
                a = outputs[0][indices[0][target.names[0]]]  # type: ignore[index]
                b = outputs[1][indices[1][target.names[1]]]  # type: ignore[index]
                _accumulate(target, a, b)
        yield Progress(
            (start + len(batch)) / len(x), f"Per-layer error: {start + len(batch)}/{len(x)} samples"
        )
    return [target.result() for target in targets]


def _target(layer: str, tensor: str, graphs: list[_Graph]) -> _Target:
    original, optimized = graphs
    names = (_find(original, tensor), _find(optimized, tensor))
    if names[0] is not None and names[1] is None:
        # Fusions rename: a quantizer folds Conv+Relu into one Conv writing the Relu's output. The
        # layer's node in the optimized model then says which tensor both models still share.
        moved = optimized.node_outputs.get(layer)
        if moved is not None and _find(original, moved) is not None:
            tensor, names = moved, (_find(original, moved), _find(optimized, moved))
    target = _Target(layer, tensor, names)
    if names[0] is None:
        target.note = f"tensor '{tensor}' is not in the original model"
    elif names[1] is None:
        target.note = f"tensor '{tensor}' is not in the optimized model"
    return target


@dataclass(frozen=True)
class _Graph:
    produced: frozenset[str]  # every tensor a node writes
    node_outputs: dict[str, str]  # node name → its first output

    @classmethod
    def of(cls, model: onnx.ModelProto) -> _Graph:
        produced = frozenset(name for node in model.graph.node for name in node.output if name)
        return cls(
            produced, {node.name: node.output[0] for node in model.graph.node if node.name and node.output}
        )


def _find(graph: _Graph, tensor: str) -> str | None:
    for name in (tensor + _QDQ_SUFFIX, tensor):
        if name in graph.produced:
            return name
    return None


def _runner_with_outputs(model: onnx.ModelProto, role: str, names: list[str]) -> ModelRunner:
    existing = {output.name for output in model.graph.output}
    return create_runner(model, role, extra_outputs=[name for name in names if name not in existing])


def _output_indices(runner: ModelRunner) -> dict[str, int]:
    outputs = runner.session.get_outputs()  # type: ignore[attr-defined]
    return {output.name: index for index, output in enumerate(outputs)}


def _accumulate(target: _Target, a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        target.note = f"shape {list(b.shape)} in the optimized model, {list(a.shape)} in the original"
        return
    if not (np.issubdtype(a.dtype, np.floating) and np.issubdtype(b.dtype, np.floating)):
        target.note = "not a float tensor in both models"
        return
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    target.signal += float(np.square(a64).sum())
    target.noise += float(np.square(a64 - b64).sum())
