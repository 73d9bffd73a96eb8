"""When an optimized model is worse than it should be, one warning per problem with what to try next.

This is the one place the thresholds and the sentences live: the evaluation stores what `judge` returns
in `EvalReport.warnings` (the command line prints each as a `WARNING:` line, the window's comparison panel
shows each with ⚠) and in `EvalReport.flagged` (the panel marks those rows). `percent_text` and
`decibels_text` are how agreement and SQNR read everywhere, so the command line and the window agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from slimscope.core.evaluate.per_layer import LayerError
    from slimscope.core.evaluate.report import LatencyComparison

AGREEMENT_MIN = 0.95  # top-1 agreement below this: the optimized model often picks another class
SQNR_MIN_DB = 20.0  # output SQNR below this: the error is more than a tenth of the signal's amplitude
ACCURACY_DROP_MAX = 0.01  # a drop of more than one point
SLOWER_RATIO = 1.05  # below this, interleaved timings of two models are within measurement noise
WORST_LAYERS = 3

QUALITY_ADVICE = (
    'Try keeping those layers in float ("quantize": null in their recipe entries, or the settings '
    "panel), the sensitivity sweep to find the layers that cost most (`slimscope sensitivity`, or the "
    "Sensitivity tab), or a gentler preset (int8-best; int8 instead of pruning)."
)
SLOWER_ADVICE = (
    "Only layers onnxruntime runs as int8 get faster: int4 weights, 16-bit layers and float layers between "
    "int8 ones run through dequantization (the int8 preset has none of them), and a small or memory-bound "
    "model may gain nothing from int8; channel pruning (channels-30) removes work."
)
LARGER_ADVICE = (
    "Quantization stores a scale and zero point per tensor and channel: on small layers they outweigh what "
    "8-bit weights save, so keep small layers in float, or use the int8 preset."
)


@dataclass(frozen=True)
class Verdict:
    warnings: tuple[str, ...]  # one sentence (or a few) per problem, each ending with what to try
    flagged: frozenset[str]  # the report rows that crossed a threshold: "accuracy", "agreement", ...


def percent_text(value: float | None) -> str:
    """A share as the command line and the window show it: one decimal, "85.0%"."""
    return "" if value is None else f"{value:.1%}"


def decibels_text(value: float | None) -> str:
    """An SQNR as the command line and the window show it: one decimal, "23.4 dB"."""
    if value is None:
        return ""
    if math.isinf(value):
        return "identical" if value > 0 else "-inf dB"
    return f"{value:.1f} dB"


def judge(
    *,
    accuracy: Mapping[str, float] | None = None,
    agreement: float | None = None,
    sqnr_db: float | None = None,
    sqnr_on: str = "the outputs",
    latency: Sequence[LatencyComparison] | None = None,
    sizes: Mapping[str, int] | None = None,
    layers: Sequence[LayerError] = (),
) -> Verdict:
    """The warnings for an evaluation's numbers (any may be None: not measured)."""
    problems, flagged = _quality_problems(accuracy, agreement, sqnr_db, sqnr_on)
    found = []
    if problems:
        text = "; ".join(problems)
        text = text[0].upper() + text[1:] + ". "
        worst = _worst_layers(layers)
        if worst:
            text += f"The layers with the largest measured error: {worst}. "
        found.append(text + QUALITY_ADVICE)
    for row in latency or ():
        before, after = row.original.median_ms, row.optimized.median_ms
        slower = after / before if before else 0.0
        if slower > SLOWER_RATIO:
            threads = f"{row.threads} thread{'s' if row.threads != 1 else ''}"
            found.append(
                f"The optimized model is {slower:.2f}x SLOWER than the original at {threads} "
                f"(median {after:.3g} ms vs {before:.3g} ms). {SLOWER_ADVICE}"
            )
            flagged.add("latency_ms")
    if sizes is not None and sizes["optimized"] > sizes["original"]:
        found.append(
            f"The optimized model is LARGER on disk than the original ({megabytes(sizes['optimized'])} "
            f"vs {megabytes(sizes['original'])}). {LARGER_ADVICE}"
        )
        flagged.add("size_bytes")
    return Verdict(tuple(found), frozenset(flagged))


def _quality_problems(
    accuracy: Mapping[str, float] | None, agreement: float | None, sqnr: float | None, sqnr_on: str
) -> tuple[list[str], set[str]]:
    problems, flagged = [], set()
    if accuracy is not None and accuracy["original"] - accuracy["optimized"] > ACCURACY_DROP_MAX:
        drop = 100 * (accuracy["original"] - accuracy["optimized"])
        problems.append(
            f"the optimized model's accuracy is {drop:.1f} points LOWER than the original's "
            f"({percent_text(accuracy['optimized'])} vs {percent_text(accuracy['original'])})"
        )
        flagged.add("accuracy")
    if agreement is not None and agreement < AGREEMENT_MIN:
        problems.append(
            f"top-1 agreement with the original is {percent_text(agreement)} "
            f"(below {percent_text(AGREEMENT_MIN)})"
        )
        flagged.add("agreement")
    if sqnr is not None and sqnr < SQNR_MIN_DB:
        problems.append(f"SQNR on {sqnr_on} is {decibels_text(sqnr)} (below {SQNR_MIN_DB:.0f} dB)")
        flagged.add("sqnr_db")
    return problems, flagged


def _worst_layers(layers: Sequence[LayerError]) -> str:
    measured = [layer for layer in layers if layer.sqnr_db is not None and math.isfinite(layer.sqnr_db)]
    worst = sorted(measured, key=lambda layer: layer.sqnr_db or 0.0)[:WORST_LAYERS]
    return ", ".join(f"'{layer.name}' {decibels_text(layer.sqnr_db)}" for layer in worst)


def megabytes(size: int) -> str:
    return f"{size / 1e6:.2f} MB" if size >= 10_000 else f"{size} bytes"
