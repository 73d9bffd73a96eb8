"""The automatic recipe's outcome: its verified candidates, the result, and what the budget means.

A drop in accuracy or top-1 agreement is a count of samples: on 60 samples one changed answer is 1.67
points, so a budget of 1 point could only be met by changing nothing. The budget therefore counts whole
samples: it allows floor(budget × samples) of them, and a budget smaller than one sample is rounded up to
one sample (and the result says so). For outputs that are not classifiers the drop is read from the output
SQNR (30 dB or more counts as no drop, 0 dB as a drop of 1), and the texts say that instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from slimscope.core.comparison import Comparison
from slimscope.core.recipe import Recipe

Goal = Literal["size", "latency", "both"]
# Above this ratio to float a candidate counts as slower (below it, interleaved timings of two models are
# within measurement noise); "latency" and "both" never choose one, "size" says so.
SLOWER_RATIO = 1.05

_COUNT_METRICS = {"accuracy": "top-1 accuracy", "agreement": "top-1 agreement"}
_SQNR_FREE_DB = 30.0  # as auto_recipe._sqnr_as_drop: an output SQNR at or above this counts as no drop


@dataclass(frozen=True)
class Budget:
    requested: float  # the drop the user allowed (a fraction: 0.01 is one point)
    allowed: float  # what candidates are held to: whole samples for accuracy and agreement
    samples: int  # evaluation samples the drop is counted on
    metric: str  # "accuracy", "agreement" or "sqnr"

    @classmethod
    def of(cls, requested: float, samples: int, metric: str) -> Budget:
        if metric not in _COUNT_METRICS or samples < 1:
            return cls(requested, requested, samples, metric)
        whole = math.floor(requested * samples + 1e-9)
        if whole == 0 and requested > 0:
            whole = 1  # less than one sample could never be met except by changing nothing
        return cls(requested, whole / samples, samples, metric)

    @property
    def rounded_up(self) -> bool:
        return self.allowed > self.requested + 1e-12

    @property
    def counts_samples(self) -> bool:
        return self.metric in _COUNT_METRICS and self.samples >= 1

    def text(self) -> str:
        """ "top-1 agreement drop at most 1 of 60 samples (1.67 pts)" or the SQNR equivalent."""
        if not self.counts_samples:
            floor_db = _SQNR_FREE_DB * (1 - self.allowed)
            return (
                f"drop at most {100 * self.allowed:.2f} pts measured on output SQNR (no classifier output: "
                f"SQNR at least {floor_db:.1f} dB)"
            )
        whole = round(self.allowed * self.samples)
        return (
            f"{_COUNT_METRICS[self.metric]} drop at most {whole} of {self.samples} samples "
            f"({100 * self.allowed:.2f} pts)"
        )

    def drop_text(self, drop: float) -> str:
        """A measured drop in points, and in samples where it counts samples."""
        if not self.counts_samples or not math.isfinite(drop):
            return f"{100 * drop:.2f} pts"
        return f"{100 * drop:.2f} pts ({round(drop * self.samples)} of {self.samples} samples)"

    def note(self) -> str | None:
        """What the rounding did, when it did anything."""
        if not self.rounded_up:
            return None
        return (
            f"A drop of {100 * self.requested:.2f} pts is less than one of the {self.samples} evaluation "
            f"samples ({100 / self.samples:.2f} pts each), so the budget was rounded up to 1 sample."
        )


@dataclass(frozen=True)
class Candidate:
    """One verified recipe: what it cost (drop) and gained (size, latency)."""

    recipe: Recipe
    drop: float
    size_bytes: int
    latency_ms: float | None
    within_budget: bool
    float_latency_ms: float | None = None  # the float model's, timed interleaved with this one

    @property
    def speed_ratio(self) -> float | None:
        """Latency against float's: above 1 is slower."""
        if self.latency_ms is None or not self.float_latency_ms:
            return None
        return self.latency_ms / self.float_latency_ms

    @property
    def slower(self) -> bool:
        ratio = self.speed_ratio
        return ratio is not None and ratio > SLOWER_RATIO

    def settings_text(self) -> str:
        """What the recipe does, in words: "int8 on 12 layers, channels 30 % on 2"."""
        counts: dict[str, int] = {}
        for name, _ in self.recipe.layers:
            settings = self.recipe.settings_for(name)
            if settings.quantize is not None:
                what = "int4 weights" if settings.quantize.weight_bits == 4 else "int8"
                counts[what] = counts.get(what, 0) + 1
            if settings.prune is not None:
                what = f"channels {settings.prune.sparsity:.0%}"
                counts[what] = counts.get(what, 0) + 1
        parts = [f"{what} on {count} layer{'s' if count != 1 else ''}" for what, count in counts.items()]
        return ", ".join(parts) or "every layer float"

    def to_dict(self) -> dict[str, Any]:
        return {
            "drop": self.drop,
            "size_bytes": self.size_bytes,
            "latency_ms": self.latency_ms,
            "float_latency_ms": self.float_latency_ms,
            "slower_than_float": self.slower,
            "within_budget": self.within_budget,
            "recipe": self.recipe.to_dict(),
        }


@dataclass(frozen=True)
class AutoResult:
    recipe: Recipe  # the best verified recipe within the budget (all float when none was)
    drop: float  # its verified drop
    budget: float  # as asked (a fraction)
    metric: str  # "accuracy", "agreement" or "sqnr": what the drop is measured in
    goal: Goal
    comparison: Comparison | None  # of `recipe`, on the evaluation data; None: nothing met the budget
    candidates: tuple[Candidate, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    samples: int = 0  # evaluation samples the drops are counted on

    @property
    def met(self) -> bool:
        return self.comparison is not None

    @property
    def limits(self) -> Budget:
        """The budget as candidates were held to it (whole samples for accuracy and agreement)."""
        return Budget.of(self.budget, self.samples, self.metric)

    @property
    def closest(self) -> Candidate | None:
        """When nothing met the budget: the candidate that came nearest (least drop; then least slower)."""
        if not self.candidates:
            return None
        return min(
            self.candidates,
            key=lambda c: (round(c.drop, 9), (c.speed_ratio or 1.0) if c.slower else 0.0, c.size_bytes),
        )

    def shortfall_text(self) -> str:
        """One line for a search that found nothing: the closest candidate and what it measured."""
        limits, closest = self.limits, self.closest
        if closest is None:
            return f"No recipe met the budget ({limits.text()}): no candidate could be verified."
        number = self.candidates.index(closest) + 1
        what = f"candidate {number} ({closest.settings_text()})"
        if closest.within_budget and closest.slower:
            return (
                f"No recipe met the budget without making the model slower: the closest, {what}, dropped "
                f"{limits.drop_text(closest.drop)} but runs {closest.speed_ratio:.2f}x slower than float."
            )
        return (
            f"No recipe met the budget ({limits.text()}): the closest, {what}, dropped "
            f"{limits.drop_text(closest.drop)}."
        )

    def to_dict(self) -> dict[str, Any]:
        closest = None if self.met or self.closest is None else self.candidates.index(self.closest)
        return {
            "met": self.met,
            "goal": self.goal,
            "budget": self.budget,
            "allowed_drop": self.limits.allowed,
            "samples": self.samples,
            "metric": self.metric,
            "drop": self.drop,
            "recipe": self.recipe.to_dict() if self.met else None,
            "closest_candidate": closest,
            "candidates": [candidate.to_dict() for candidate in self.candidates],
            "notes": list(self.notes),
        }
