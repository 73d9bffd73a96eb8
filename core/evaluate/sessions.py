"""onnxruntime sessions for evaluation: one set of options for every model, and batch-by-batch runs.

Both models of a comparison get the same options, so that a difference in what they compute or how
fast is the models' doing and not the runtime's. Spin-waiting is off: measured, an idle session that
spins in the same process slowed the measured one ~3x.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from slimscope.core.data.fit import model_input
from slimscope.core.errors import ModelLoadError

DEFAULT_BATCH = 32

_NUMPY_INPUT_TYPES: dict[int, type] = {
    onnx.TensorProto.FLOAT: np.float32,
    onnx.TensorProto.FLOAT16: np.float16,
    onnx.TensorProto.DOUBLE: np.float64,
}


def session_options(threads: int = 0):
    """`threads` intra-op threads (0: onnxruntime's choice), one inter-op thread, no spinning."""
    import onnxruntime as ort  # deferred: ~0.2 s to import, and inspecting a model does not need it

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 4  # fatal only: a run's error comes back as an exception, said in words
    return options


@dataclass
class ModelRunner:
    """A session for one model, fed float32 data cast to the model's input type."""

    role: str  # "original" or "optimized", for messages
    session: object  # onnxruntime.InferenceSession
    input_name: str
    input_dtype: type
    batch: int  # samples per run: the input's fixed batch dim, else DEFAULT_BATCH
    fixed_batch: bool

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """Outputs for `x` (any number of samples when the batch is dynamic, `batch` when fixed)."""
        feed: dict[str, np.ndarray] = {self.input_name: np.ascontiguousarray(x, dtype=self.input_dtype)}
        try:
            return self.session.run(None, feed)  # type: ignore[attr-defined]
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelLoadError(
                f"onnxruntime failed running the {self.role} model: {_first_line(exc)}."
            ) from None

    def run_all(self, x: np.ndarray) -> list[np.ndarray]:
        """Outputs for any number of samples: a fixed batch is filled chunk by chunk, the last one
        padded with copies of its last sample whose outputs are dropped (outputs are batch-first)."""
        if not self.fixed_batch or len(x) == self.batch:
            return self.run(x)
        chunks = []
        for start in range(0, len(x), self.batch):
            chunk = x[start : start + self.batch]
            count = len(chunk)
            if count < self.batch:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch - count, axis=0)])
            chunks.append([output[:count] for output in self.run(chunk)])
        return [np.concatenate(parts) for parts in zip(*chunks, strict=True)]


def batch_step(runners: Sequence[ModelRunner], preferred: int = DEFAULT_BATCH) -> int:
    """Samples per step over several runners: the first fixed batch size, else `preferred`."""
    return next((runner.batch for runner in runners if runner.fixed_batch), preferred)


def batches(x: np.ndarray, step: int) -> Iterator[tuple[int, np.ndarray]]:
    """(start, slice) over the samples of `x`."""
    for start in range(0, len(x), step):
        yield start, x[start : start + step]


def create_runner(
    model: onnx.ModelProto, role: str, threads: int = 0, extra_outputs: Sequence[str] = ()
) -> ModelRunner:
    """A session for `model`; `extra_outputs` names intermediate tensors to return after its outputs."""
    import onnxruntime as ort

    name, elem_type, dims = model_input(model)
    source = model.SerializeToString() + _outputs_patch(extra_outputs)
    try:
        session = ort.InferenceSession(source, session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ModelLoadError(f"onnxruntime cannot run the {role} model: {_first_line(exc)}.") from None
    batch = dims[0] if dims and dims[0] is not None else None
    dtype = _NUMPY_INPUT_TYPES.get(elem_type, np.float32)
    return ModelRunner(role, session, name, dtype, batch or DEFAULT_BATCH, batch is not None)


def _outputs_patch(names: Sequence[str]) -> bytes:
    """Serialized bytes that, appended to a serialized model, add `names` as graph outputs.

    Parsing concatenated protobuf messages merges them and appends repeated fields, so this adds
    outputs without deep-copying the model (and its weights) in Python first.
    """
    patch = onnx.ModelProto()
    for name in names:
        patch.graph.output.add().name = name
    return patch.SerializeToString() if names else b""


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__).rstrip(".")
