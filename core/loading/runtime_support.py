"""Which ONNX opsets and IR versions the installed onnxruntime accepts, measured rather than assumed.

onnxruntime publishes no API for this. Importing it costs time that `inspect` should not pay for the
common case, so it is probed only when a model is newer than what every supported release runs.
"""

from __future__ import annotations

from functools import lru_cache

import onnx
from onnx import helper

# Every onnxruntime release Slimscope supports (>= 1.20) runs at least these.
_SAFE_OPSET = 21
_SAFE_IR = 10


def runtime_limits(model_opset: int, model_ir: int) -> tuple[int, int]:
    """(max opset, max IR version) to check this model against."""
    if model_opset <= _SAFE_OPSET and model_ir <= _SAFE_IR:
        return _SAFE_OPSET, _SAFE_IR
    return _probe_onnxruntime()


@lru_cache(maxsize=1)
def _probe_onnxruntime() -> tuple[int, int]:
    ceiling_opset = onnx.defs.onnx_opset_version()
    ceiling_ir = onnx.IR_VERSION
    max_opset = _highest(_SAFE_OPSET, ceiling_opset, lambda v: _runs(v, _SAFE_IR))
    max_ir = _highest(_SAFE_IR, ceiling_ir, lambda v: _runs(_SAFE_OPSET, v))
    return max_opset, max_ir


def _highest(low: int, high: int, accepted) -> int:
    """Largest value in [low, high] that `accepted` allows, assuming acceptance is monotone."""
    while low < high:
        middle = (low + high + 1) // 2
        if accepted(middle):
            low = middle
        else:
            high = middle - 1
    return low


def _runs(opset: int, ir_version: int) -> bool:
    import onnxruntime as ort  # deferred: ~0.2 s to import

    value = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [value],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime raises its own untyped errors for an unsupported version
        return False
    return True
