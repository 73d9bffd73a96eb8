"""Bring old-opset models to a current opset with onnx's version converter.

Opsets below 13 lack what the optimizer needs (per-channel QuantizeLinear/DequantizeLinear with an
`axis`), and model-zoo files at opset 7–9 are common, so those are converted on load.
"""

from __future__ import annotations

import onnx
from onnx import version_converter

from slimscope.core.model import default_opset

MIN_OPSET = 13
TARGET_OPSET = 17


def upgrade_opset(model: onnx.ModelProto) -> tuple[onnx.ModelProto, str | None]:
    """Return (model, note). Falls back to the lowest target that converts, or the original model."""
    current = default_opset(model)
    if current >= MIN_OPSET:
        return model, None
    failure = ""
    for target in (TARGET_OPSET, MIN_OPSET):
        try:
            converted = version_converter.convert_version(model, target)
        except Exception as exc:  # the converter raises bare RuntimeError/ValidationError per adapter
            failure = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            continue
        _raise_ir_version(converted)
        return converted, f"Upgraded the model from opset {current} to opset {target}."
    return model, (
        f"Kept opset {current}: onnx's version converter could not upgrade it ({failure[:200]}); "
        "quantization may need a newer opset."
    )


def _raise_ir_version(model: onnx.ModelProto) -> None:
    needed = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    model.ir_version = max(model.ir_version, needed)
