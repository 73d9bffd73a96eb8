"""An automatic recipe within an accuracy budget: choose per-layer bits and channel pruning from measured
sensitivities, then verify on the evaluation data and back off until the budget holds.

The scheme (greedy, as the measured sensitivities are per layer and roughly additive for small drops):
1. Moves are (layer, step) pairs: float → int8 → int4 weights for quantization, and 30 % of output channels
   for pruning, each with the drop the sensitivity sweep measured for that layer alone, and a benefit for
   the goal: bytes saved ("size"), multiply-accumulates made cheaper or removed ("latency"), or both
   normalized and summed. int4 is left out for latency (it runs slower than int8 on CPUs) and unstructured
   sparsity is left out altogether (it saves neither file size nor time in onnxruntime).
2. Moves are taken best benefit-per-drop first while the summed predicted drop stays within the budget;
   a layer that would be left float between quantized ones gets int8 too (chains stay quantized).
3. The recipe is optimized and evaluated on the evaluation data. Over budget: the chosen move with the
   largest measured drop is undone and the recipe verified again. Within budget: more moves are tried in
   the same order while the verified drop stays within it. Every verified recipe is a candidate (with its
   accuracy, size and latency), for a Pareto plot; the result is the best verified one within the budget,
   and an ordinary recipe the user can edit further.
4. Truthfully: the budget counts whole evaluation samples (core/auto_result.py's `Budget`); "latency" and
   "both" never choose a candidate slower than the float model ("size" says so when its choice is), and
   when nothing qualifies the result has no recipe (`met` is False) and names the closest candidate. A
   candidate whose optimization fails is skipped with a note; the search goes on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from slimscope.core.auto_result import AutoResult, Budget, Candidate, Goal
from slimscope.core.comparison import Comparison
from slimscope.core.data.dataset import Dataset
from slimscope.core.data.fit import fit_to_model
from slimscope.core.errors import (
    CancelledError,
    OptimizeError,
    QuantizationError,
    RecipeError,
    WorkerCrashError,
)
from slimscope.core.evaluate import iter_evaluate
from slimscope.core.evaluate.report import EvalReport
from slimscope.core.layers import Layer, find_layers
from slimscope.core.loading.input_shapes import concrete_shapes
from slimscope.core.model import LoadedModel
from slimscope.core.optimize import OptimizeCache, iter_optimize
from slimscope.core.quantize.islands import float_islands
from slimscope.core.recipe import LayerSettings, PruneSpec, PtqSpec, QuantSpec, Recipe
from slimscope.core.sensitivity import SensitivityCache, SensitivityReport, iter_sensitivity
from slimscope.core.shapes import infer_shapes
from slimscope.core.tasks import Progress, Task, scaled

GOALS: tuple[Goal, ...] = ("size", "latency", "both")
MAX_VERIFICATIONS = 8  # optimize + evaluate runs, at most, per automatic recipe
_TOLERANCE = 1e-9  # accuracies are counts over samples: a drop equal to the budget may carry float rounding
_FREE_DROP = 1e-4  # a measured drop this small counts as free (it is within one sample's noise)
_LATENCY_BUDGET_S = 0.3  # per candidate: enough for a point on the accuracy-vs-latency plot

# Sensitivity settings the moves come from, by goal.
SWEEP_SETTINGS = {
    "size": "int8,int4,channels30",
    "latency": "int8,channels30",
    "both": "int8,int4,channels30",
}


@dataclass(frozen=True)
class Move:
    layer: str
    kind: Literal["quantize", "prune"]
    key: str  # the sensitivity setting: "int8", "int4" or "channels30"
    drop: float  # measured for this layer alone
    benefit: float
    sqnr_db: float = math.inf  # of the outputs, with this layer alone changed: ranks moves of equal drop

    @property
    def risk(self) -> tuple[float, float]:
        return (self.drop, -self.sqnr_db)

    @property
    def ratio(self) -> float:
        return self.benefit / (max(self.drop, 0.0) + _FREE_DROP)


def iter_auto_recipe(
    loaded: LoadedModel,
    data: Dataset,
    *,
    max_drop: float = 0.01,
    goal: Goal = "both",
    calibration: Dataset | np.ndarray | None = None,
    sensitivity: SensitivityReport | None = None,
    sensitivity_cache: SensitivityCache | None = None,
    base: Recipe | None = None,
    max_verifications: int = MAX_VERIFICATIONS,
) -> Task[AutoResult]:
    """A recipe whose verified drop on `data` is at most `max_drop` (a fraction: 0.01 is one point).

    `sensitivity` is measured first when not given. `base` lends its data section (preprocessing,
    calibration size) and its quantization aids (the "ptq" section) to every candidate. Partial results are the verified `Comparison`s, as they come."""
    if goal not in GOALS:
        raise RecipeError(f"The goal must be one of {', '.join(GOALS)}, not {goal!r}.")
    if not 0 <= max_drop < 1:
        raise RecipeError(f"The budget must be a fraction in [0, 1), not {max_drop}.")
    data = fit_to_model(data, loaded.model)
    calib = data.x if calibration is None else _samples(calibration, loaded)
    if sensitivity is None:
        sweep = iter_sensitivity(
            loaded, data, SWEEP_SETTINGS[goal], calibration=calib, cache=sensitivity_cache
        )
        sensitivity = yield from scaled(sweep, 0.0, 0.5, None)
    # MACs need concrete input sizes: the model's own, else the data's (free height and width are common).
    given = concrete_shapes(loaded.input_shapes) or {loaded.model.graph.input[0].name: (1, *data.x.shape[1:])}
    shapes = infer_shapes(loaded.model, given)
    layers = {layer.name: layer for layer in find_layers(loaded.model, shapes)}
    moves = sorted(_moves(sensitivity, layers, goal), key=lambda move: -move.ratio)
    budget = Budget.of(max_drop, len(data), sensitivity.metric)
    search = _Search(loaded, data, calib, budget.allowed, max_verifications, base)
    search.notes += [note for note in [budget.note()] if note]
    chosen = _closing_islands(_within_budget(moves, budget.allowed), moves, loaded.model)
    yield from search.run(chosen, moves)
    if goal != "size" and _best(search.candidates, goal) is None:
        yield from search.verify_speed_safe(moves)
    best = _best(search.candidates, goal)
    search.notes += _speed_notes(search.candidates, best, goal)
    if best is None:
        return AutoResult(
            _recipe([], search.data_section, search.ptq), 0.0, max_drop, sensitivity.metric, goal, None,
            tuple(search.candidates), tuple(search.notes), len(data),
        )  # fmt: skip
    return AutoResult(
        best.recipe, best.drop, max_drop, sensitivity.metric, goal, search.comparisons[best.recipe],
        tuple(search.candidates), tuple(search.notes), len(data),
    )  # fmt: skip


@dataclass
class _Search:
    """The verification loop: each verified recipe becomes a `Candidate` (and a `Comparison`)."""

    loaded: LoadedModel
    data: Dataset
    calib: np.ndarray
    allowed: float  # the budget candidates are held to
    max_verifications: int
    base: Recipe | None
    cache: OptimizeCache = field(default_factory=OptimizeCache)
    candidates: list[Candidate] = field(default_factory=list)
    comparisons: dict[Recipe, Comparison] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    attempts: int = 0  # verifications started, failed ones included

    @property
    def data_section(self) -> dict[str, Any]:
        return self.base.data if self.base is not None else {}

    @property
    def ptq(self) -> PtqSpec:
        return self.base.ptq if self.base is not None else PtqSpec()  # the user's quantization aids stay on

    def within(self, drop: float) -> bool:
        return drop <= self.allowed + _TOLERANCE

    def run(self, chosen: list[Move], moves: list[Move]):
        """Back off while over the budget; within it, add moves a quarter at a time while it holds."""
        if not chosen and moves:  # every move alone costs more than the budget: measure the mildest
            chosen = [min(moves, key=lambda move: move.risk)]
        if not chosen:
            return
        drop = yield from self.verify(chosen)
        if not self.within(drop):
            by_layer = {(move.layer, move.key): move for move in moves}
            while not self.within(drop) and self.attempts < self.max_verifications:
                chosen = _back_off(chosen, by_layer)
                if not chosen:  # a recipe that changes nothing is no candidate
                    return
                drop = yield from self.verify(chosen)
            return
        # Moves that alone cost more than the budget are never tried.
        rest = [m for m in moves if m not in chosen and m.drop <= self.allowed and _compatible(m, chosen)]
        while rest and self.attempts < self.max_verifications:
            chunk = rest[: max(1, len(rest) // 4)]  # a quarter of what is left at a time
            trial = chosen + chunk
            trial_drop = yield from self.verify(trial)
            if not self.within(trial_drop):
                break
            chosen = trial
            rest = [move for move in rest[len(chunk) :] if _compatible(move, chosen)]

    def verify_speed_safe(self, moves: list[Move]):
        """Within the budget but slower than float (int4 weights run dequantized): one more try with the
        fastest such candidate's int4 layers at int8."""
        slow = [c for c in self.candidates if c.within_budget and c.slower]
        int8 = {move.layer: move for move in moves if move.key == "int8"}
        for candidate in sorted(slow, key=lambda c: c.speed_ratio or math.inf):
            recipe = candidate.recipe
            settings = {name: recipe.settings_for(name) for name, _ in recipe.layers}
            if not any(s.quantize is not None and s.quantize.weight_bits == 4 for s in settings.values()):
                continue
            yield from self.verify([move for name, s in settings.items() for move in _as_int8(name, s, int8)])
            return

    def verify(self, selection: list[Move]):
        """Optimize and evaluate one selection; its drop (inf when it could not be built)."""
        recipe = _recipe(selection, self.data_section, self.ptq)
        step = self.attempts
        self.attempts += 1
        span = max(self.max_verifications, self.attempts)
        start, end = 0.5 + 0.5 * step / span, 0.5 + 0.5 * (step + 1) / span
        yield Progress(start, f"Verifying candidate {step + 1} ({len(selection)} layer settings)")
        try:
            result = yield from scaled(iter_optimize(self.loaded, recipe, self.calib, cache=self.cache),
                                       start, start, None)  # fmt: skip
        except (WorkerCrashError, CancelledError):
            raise
        except (OptimizeError, QuantizationError) as exc:  # one bad combination ends only itself
            self.notes.append(f"A candidate with {len(selection)} layer settings was skipped: {exc}")
            return math.inf
        report = yield from scaled(
            iter_evaluate(self.loaded.model, result.model, self.data, latency=True, latency_threads=(1,),
                          latency_budget_s=_LATENCY_BUDGET_S),
            start, end, None,
        )  # fmt: skip
        drop = _drop(report)
        timed = report.latency_ms[0] if report.latency_ms else None
        self.candidates.append(Candidate(
            recipe, drop, report.size_bytes["optimized"], None if timed is None else timed.optimized.median_ms,
            self.within(drop), None if timed is None else timed.original.median_ms,
        ))  # fmt: skip
        comparison = Comparison(recipe, result, report)
        self.comparisons[recipe] = comparison
        yield Progress(end, f"Candidate {step + 1}: drop {drop:.2%}", comparison)
        return drop


def _as_int8(name: str, settings: LayerSettings, int8: dict[str, Move]) -> list[Move]:
    """The moves a layer's settings in a recipe of this search stand for, with int4 weights made int8."""
    moves = []
    if settings.prune is not None:
        moves.append(Move(name, "prune", "channels30", 0.0, 0.0))
    if settings.quantize is not None:
        moves.append(int8.get(name, Move(name, "quantize", "int8", 0.0, 0.0)))
    return moves


def _speed_notes(candidates: list[Candidate], best: Candidate | None, goal: Goal) -> list[str]:
    """Slower than float, said plainly: what "size" chose anyway, and what the other goals left out."""
    if best is not None and best.slower:
        return [
            f"The smallest recipe within the budget runs {best.speed_ratio:.2f}x SLOWER than the float model "
            "at 1 thread (int4 weights, and float layers between quantized ones, run through "
            "dequantization); the goal 'both' or 'latency' keeps it at least as fast."
        ]
    if goal == "size":
        return []
    left = [number for number, c in enumerate(candidates, start=1) if c.within_budget and c.slower]
    if not left:
        return []
    listed = ", ".join(map(str, left))
    return [f"Candidate{'s' if len(left) > 1 else ''} {listed} met the budget but ran slower than the float "
            "model, so the goal left them out."]  # fmt: skip


# ---------------------------------------------------------------------- moves


def _moves(report: SensitivityReport, layers: dict[str, Layer], goal: Goal) -> list[Move]:
    drops: dict[tuple[str, str], float] = {}
    sqnrs: dict[tuple[str, str], float | None] = {}
    for row in report.rows:
        if row.applied:
            value = row.drop if row.drop is not None else _sqnr_as_drop(row.sqnr_db)
            drops[(row.layer, row.setting_key)] = max(value, 0.0)
            sqnrs[(row.layer, row.setting_key)] = row.sqnr_db
    total_bytes = sum(layer.params for layer in layers.values()) * 4 or 1
    total_macs = sum(layer.macs or 0 for layer in layers.values()) or 1
    moves = []
    for (name, key), drop in drops.items():
        layer = layers.get(name)
        if layer is None:
            continue
        saved_bytes, cheaper_macs = _gains(layer, key)
        if goal == "latency" and key == "int4":
            continue
        benefit = {
            "size": saved_bytes / total_bytes,
            "latency": cheaper_macs / total_macs,
            "both": saved_bytes / total_bytes + cheaper_macs / total_macs,
        }[goal]
        if benefit > 0:
            kind: Literal["quantize", "prune"] = "prune" if key.startswith("channels") else "quantize"
            sqnr = sqnrs.get((name, key))
            moves.append(Move(name, kind, key, drop, benefit, math.inf if sqnr is None else sqnr))
    return moves


def _gains(layer: Layer, key: str) -> tuple[float, float]:
    """(bytes saved, MACs made cheaper or removed) by a setting, against float: rough, for ranking only."""
    macs = layer.macs or 0
    if key == "int8":
        return layer.params * 3.0, macs * 0.5  # 4 → 1 byte; int8 kernels run about twice as fast
    if key == "int4":
        return layer.params * 3.5, 0.0
    if key == "channels30":
        return layer.params * 4 * 0.3, macs * 0.3
    return 0.0, 0.0


def _within_budget(moves: list[Move], budget: float) -> list[Move]:
    chosen: list[Move] = []
    spent = 0.0
    for move in moves:
        if not _compatible(move, chosen):
            continue
        if spent + move.drop <= budget:
            chosen.append(move)
            spent += move.drop
    return chosen


def _closing_islands(chosen: list[Move], moves: list[Move], model) -> list[Move]:
    """Chains stay quantized: a layer left float between quantized ones (a Q/DQ round trip that often costs
    more time than it saves) gets its int8 move too, when the sweep measured one."""
    quantized = {move.layer for move in chosen if move.kind == "quantize"}
    int8 = {move.layer: move for move in moves if move.key == "int8"}
    added = [int8[name] for name, _, _ in float_islands(model, quantized) if name in int8]
    return chosen + [move for move in added if _compatible(move, chosen)]


def _compatible(move: Move, chosen: list[Move]) -> bool:
    """One quantization and one pruning step per layer."""
    return all(other.layer != move.layer or other.kind != move.kind for other in chosen)


def _back_off(chosen: list[Move], by_layer: dict[tuple[str, str], Move]) -> list[Move]:
    """The riskiest quarter of the chosen moves made milder: int4 becomes int8, anything else is undone.
    (Single-layer drops add up to more than their sum when many layers change, so steps of one move would
    take too many verifications.)"""
    ranked = sorted(chosen, key=lambda move: move.risk, reverse=True)
    riskiest = {id(move) for move in ranked[: max(1, len(ranked) // 4)]}
    kept = []
    for move in chosen:
        if id(move) not in riskiest:
            kept.append(move)
        elif move.key == "int4" and (move.layer, "int8") in by_layer:
            kept.append(by_layer[(move.layer, "int8")])
    return kept


def _recipe(moves: list[Move], data_section: dict[str, Any], ptq: PtqSpec) -> Recipe:
    recipe = Recipe(defaults=LayerSettings(None, None)).with_data(data_section or None).with_ptq(ptq)
    for move in moves:
        if move.kind == "quantize":
            spec = QuantSpec(weight_bits=4) if move.key == "int4" else QuantSpec()
            recipe = recipe.with_layer(move.layer, quantize=spec)
        else:
            recipe = recipe.with_layer(move.layer, prune=PruneSpec(structure="channel", sparsity=0.3))
    return recipe


def _best(candidates: list[Candidate], goal: Goal) -> Candidate | None:
    """Within the budget, the best for the goal; "latency" and "both" never take one slower than float.
    "both" weighs size and time alike: the least product of the two (each against float's)."""
    within = [c for c in candidates if c.within_budget and c.recipe.layers]
    if goal != "size":
        within = [c for c in within if not c.slower]
    if not within:
        return None
    if goal == "latency":
        return min(within, key=lambda c: (c.latency_ms if c.latency_ms is not None else math.inf, c.drop))
    if goal == "both":
        return min(within, key=lambda c: (c.size_bytes * (c.speed_ratio or 1.0), c.drop))
    return min(within, key=lambda c: (c.size_bytes, c.latency_ms or math.inf, c.drop))


# ---------------------------------------------------------------------- measuring


def _drop(report: EvalReport) -> float:
    if report.accuracy is not None:
        return report.accuracy["original"] - report.accuracy["optimized"]
    if report.agreement is not None:
        return 1.0 - report.agreement
    return _sqnr_as_drop(report.sqnr_db)


def _sqnr_as_drop(sqnr_db: float | None) -> float:
    """For outputs that are not classifiers: an SQNR below 30 dB counts as a drop growing to 1 at 0 dB."""
    if sqnr_db is None or math.isinf(sqnr_db):
        return 0.0
    return float(min(max((30.0 - sqnr_db) / 30.0, 0.0), 1.0))


def _samples(calibration: Dataset | np.ndarray, loaded: LoadedModel) -> np.ndarray:
    if isinstance(calibration, np.ndarray):
        return calibration
    return fit_to_model(calibration, loaded.model).x
