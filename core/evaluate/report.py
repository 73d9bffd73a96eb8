"""`EvalReport`: what optimizing a model cost and gained, with plain warnings where it made things worse."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from slimscope.core.evaluate.footprint import Footprint
from slimscope.core.evaluate.latency import LatencyStats
from slimscope.core.evaluate.per_layer import LayerError
from slimscope.core.evaluate.quality_warnings import megabytes

ROLES = ("original", "optimized")


@dataclass(frozen=True)
class LatencyComparison:
    """Both models timed interleaved at one thread count."""

    threads: int
    original: LatencyStats
    optimized: LatencyStats

    @property
    def speedup(self) -> float:
        """Median original / median optimized: above 1 the optimized model is faster."""
        return self.original.median_ms / self.optimized.median_ms if self.optimized.median_ms else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {
            "threads": self.threads,
            "original": self.original.to_dict(),
            "optimized": self.optimized.to_dict(),
            "speedup": self.speedup,
        }


@dataclass(frozen=True)
class EvalReport:
    samples: int  # samples both models ran on
    accuracy: dict[str, float] | None  # {"original", "optimized"}, fractions; None without labels
    agreement: float | None  # top-1 agreement; None when the output is not [N, classes]
    sqnr_db: float | None  # over all outputs; inf when identical
    cosine: float | None  # mean per-sample cosine similarity of the outputs
    latency_ms: tuple[LatencyComparison, ...] | None  # at 1 thread and at all threads; None if not timed
    size_bytes: dict[str, int]
    gzip_bytes: dict[str, int | None]  # None in a preliminary report (measured with the details)
    nonzero_params: dict[str, int]
    macs: dict[str, int | None] | None  # as given by the caller
    layers: tuple[LayerError, ...]
    warnings: tuple[str, ...]  # quality_warnings.judge's sentences, then notes on outputs and layers
    sqnr_on: str = "the outputs"  # or "the logits before Softmax" (see logits.py)
    flagged: frozenset[str] = frozenset()  # rows past a warning threshold: "agreement", "sqnr_db", ...

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (strict JSON: infinities become the strings "inf"/"-inf", NaN becomes None)."""
        latency = None if self.latency_ms is None else [row.to_dict() for row in self.latency_ms]
        headline = None
        if self.latency_ms:  # one thread first: the number batch-1 edge deployments see
            first = self.latency_ms[0]
            headline = {"original": first.original.median_ms, "optimized": first.optimized.median_ms}
            headline |= {"threads": first.threads, "speedup": first.speedup}
        raw = {
            "samples": self.samples,
            "accuracy": self.accuracy,
            "agreement": self.agreement,
            "sqnr_db": self.sqnr_db,
            "sqnr_on": self.sqnr_on,
            "cosine": self.cosine,
            "latency_ms": headline,
            "latency": latency,  # every thread count measured, with p90
            "size_bytes": self.size_bytes,
            "gzip_bytes": self.gzip_bytes,
            "nonzero_params": self.nonzero_params,
            "macs": self.macs,
            "layers": [layer.to_dict() for layer in self.layers],
            "warnings": list(self.warnings),
        }
        return _json_ready(raw)


def _json_ready(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, Mapping):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    return value


def footprint_warnings(footprints: Mapping[str, Footprint]) -> list[str]:
    """Zeroed weights that did not make the file smaller (a larger file is `quality_warnings.judge`'s)."""
    original, optimized = footprints["original"], footprints["optimized"]
    found: list[str] = []
    fewer = 1 - optimized.nonzero_params / original.nonzero_params if original.nonzero_params else 0.0
    if optimized.gzip_bytes is None or original.gzip_bytes is None:
        return found
    if fewer >= 0.1 and optimized.size_bytes >= 0.95 * original.size_bytes:
        found.append(
            f"The optimized model has {fewer:.0%} fewer non-zero weights but its file is not smaller: "
            "onnxruntime stores and runs zeros like any other weight, so only the gzip-compressed "
            f"size shrinks ({megabytes(optimized.gzip_bytes)} vs {megabytes(original.gzip_bytes)})."
        )
    return found


def layer_warnings(layers: tuple[LayerError, ...]) -> list[str]:
    missing = [layer.name for layer in layers if layer.sqnr_db is None]
    if not missing:
        return []
    shown = ", ".join(missing[:5]) + (", …" if len(missing) > 5 else "")
    return [
        f"Per-layer error could not be measured for {len(missing)} layer{'s' if len(missing) != 1 else ''} "
        f"whose output differs in shape or is missing in the optimized model ({shown})."
    ]
