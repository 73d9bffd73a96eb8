"""Per-layer quantization with onnxruntime's QDQ quantizer: `iter_quantize` and what it returns.

- `ort_options.translate_settings` — the one translation of `QuantSpec`s into onnxruntime's options;
- `calibration` — feeds from the user's data, onnxruntime's calibrators, `CalibrationCache`;
- `prepare` — opset, node names and onnxruntime's pre-processing, on a copy;
- `forms` — what each layer became, read back from the quantized graph;
- `equalize`, `bias_correction`, `boundary_layers` — the recipe's "ptq" aids: cross-layer
  equalization before calibration, bias correction after quantizing, first/last layers kept wide;
- `runner` — `iter_quantize`, which ties them together.
"""

from slimscope.core.quantize.calibration import CalibrationCache
from slimscope.core.quantize.ort_options import OrtQuantOptions, translate_settings
from slimscope.core.quantize.runner import QuantizeResult, iter_quantize

__all__ = ["CalibrationCache", "OrtQuantOptions", "QuantizeResult", "iter_quantize", "translate_settings"]
