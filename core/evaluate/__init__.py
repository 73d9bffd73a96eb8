"""Compare an optimized model with its original: accuracy, agreement, SQNR, per-layer error, latency, size."""

from slimscope.core.evaluate.evaluation import evaluate, iter_evaluate
from slimscope.core.evaluate.footprint import Footprint, count_nonzero_params, measure_footprint
from slimscope.core.evaluate.latency import (
    LatencyStats,
    available_threads,
    iter_measure_latency,
    measure_latency,
)
from slimscope.core.evaluate.metrics import RunningMetrics, sqnr_db
from slimscope.core.evaluate.per_layer import LayerError, iter_layer_errors, layer_tensors
from slimscope.core.evaluate.report import EvalReport, LatencyComparison

__all__ = [
    "EvalReport",
    "Footprint",
    "LatencyComparison",
    "LatencyStats",
    "LayerError",
    "RunningMetrics",
    "available_threads",
    "count_nonzero_params",
    "evaluate",
    "iter_evaluate",
    "iter_layer_errors",
    "iter_measure_latency",
    "layer_tensors",
    "measure_footprint",
    "measure_latency",
    "sqnr_db",
]
