"""`History`: every recipe evaluated since the model was opened, as points of quality vs latency and size.

Pure data (no Qt) so that the bookkeeping — one point per recipe, a re-evaluated recipe replacing its
point, the oldest dropped past a cap, which quality metric the data allow — is testable on its own; the
GUI's history panel only draws it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from slimscope.core.comparison import Comparison
from slimscope.core.evaluate.report import EvalReport
from slimscope.core.recipe import LayerOverride, PruneSpec, QuantSpec, Recipe

HISTORY_CAP = 200  # points kept; enough for a long session, few enough to redraw at once

# Quality metrics in order of preference: accuracy needs labels, agreement a classifier's output.
METRICS = ("accuracy", "agreement", "sqnr_db")
METRIC_TITLES = {"accuracy": "top-1 accuracy", "agreement": "top-1 agreement", "sqnr_db": "output SQNR"}


@dataclass(frozen=True)
class ModelPoint:
    """One model's place on the plots: quality (None when unknown), latency (None when not timed), size."""

    metric: float | None
    latency_ms: float | None  # median at one thread
    size_kb: float  # file size, 1 kB = 1000 bytes


@dataclass(frozen=True)
class HistoryEntry:
    """The optimized model one recipe made; `number` counts from 1 in the order recipes were first seen."""

    number: int
    recipe: Recipe
    point: ModelPoint


def available_metric(report: EvalReport) -> str | None:
    """The best quality metric `report` has: accuracy, else top-1 agreement, else output SQNR."""
    return next((name for name in METRICS if getattr(report, name) is not None), None)


def report_point(report: EvalReport, role: str, metric: str | None) -> ModelPoint:
    """`role`'s ("original" or "optimized") point in `report`. The original agrees with itself fully
    and has no SQNR against itself (infinite), so those are 1.0 and None."""
    value: float | None = None
    if metric == "accuracy" and report.accuracy is not None:
        value = report.accuracy[role]
    elif metric == "agreement" and report.agreement is not None:
        value = report.agreement if role == "optimized" else 1.0
    elif metric == "sqnr_db" and role == "optimized":
        value = report.sqnr_db
    latency = None
    if report.latency_ms:  # the first row is one thread: what a batch-1 edge deployment sees
        latency = getattr(report.latency_ms[0], role).median_ms
    return ModelPoint(value, latency, report.size_bytes[role] / 1000)


def recipe_summary(recipe: Recipe) -> str:
    """One line: the default pruning and quantization, and how many layers override them."""
    overrides = sum(1 for _, override in recipe.layers if override != LayerOverride())
    parts = [_prune_text(recipe.defaults.prune), _quant_text(recipe.defaults.quantize)]
    if overrides:
        parts.append(f"{overrides} layer override{'s' if overrides != 1 else ''}")
    return " · ".join(parts)


def _prune_text(spec: PruneSpec | None) -> str:
    if spec is None:
        return "no pruning"
    amount = f"{spec.sparsity:.0%}" if spec.sparsity is not None else f"|w| < {spec.threshold:g}"
    return f"prune {amount} {spec.structure}{' (global)' if spec.scope == 'global' else ''}"


def _quant_text(spec: QuantSpec | None) -> str:
    if spec is None:
        return "no quantization"
    return f"int{spec.weight_bits} weights, int{spec.activation_bits} activations"


@dataclass
class History:
    """Points in the order their recipes were first evaluated, one per recipe, at most `cap`."""

    cap: int = HISTORY_CAP
    metric: str | None = None  # chosen from the first report after a clear, kept until the next clear
    original: ModelPoint | None = None  # the float model, from the first report's "original" numbers
    _entries: dict[Recipe, HistoryEntry] = field(default_factory=dict)  # insertion order = path walked
    _next_number: int = 1

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[HistoryEntry]:
        return iter(self._entries.values())

    @property
    def entries(self) -> list[HistoryEntry]:
        return list(self._entries.values())

    def entry_for(self, recipe: Recipe | None) -> HistoryEntry | None:
        return None if recipe is None else self._entries.get(recipe)

    def add(self, comparison: Comparison) -> HistoryEntry:
        """Record a comparison. A recipe seen before keeps its number and place in the path, with the
        newer numbers (a later run may have timed latency the first did not)."""
        report = comparison.report
        if not self._entries and self.original is None:
            self.metric = available_metric(report)
        self._update_original(report)
        previous = self._entries.get(comparison.recipe)
        number = previous.number if previous is not None else self._take_number()
        entry = HistoryEntry(number, comparison.recipe, report_point(report, "optimized", self.metric))
        self._entries[comparison.recipe] = entry  # an existing key keeps its position
        while len(self._entries) > self.cap:
            del self._entries[next(iter(self._entries))]
        return entry

    def clear(self) -> None:
        self._entries.clear()
        self.metric, self.original, self._next_number = None, None, 1

    def _take_number(self) -> int:
        number, self._next_number = self._next_number, self._next_number + 1
        return number

    def _update_original(self, report: EvalReport) -> None:
        """The first report gives the original's point; its latency comes from the first timed report."""
        if self.original is None:
            self.original = report_point(report, "original", self.metric)
        elif self.original.latency_ms is None and report.latency_ms:
            timed = report_point(report, "original", self.metric)
            self.original = ModelPoint(self.original.metric, timed.latency_ms, self.original.size_kb)
