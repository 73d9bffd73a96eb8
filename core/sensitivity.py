"""Per-layer sensitivity: how much each layer alone costs when pruned or quantized one way, everything else float.

Each probe (one layer × one setting) goes through the normal optimizer with a recipe whose defaults do
nothing and whose one override is the probed setting, and is compared with the float model's outputs,
which are computed once per sweep. The drop is in accuracy when the data is labelled, else 1 − top-1
agreement with the float model; output SQNR is measured always.

The scheme, fast first and exact where it matters:
1. Quick pass: every probe on the first `quick_samples` (64) samples, cheap settings first (masks, then
   channels, then quantization, whose first probe calibrates), each result streamed as it arrives.
2. Refine pass: the probes the quick pass cannot rank well are measured again on up to `max_samples`:
   every probe that changed at least one top-1 answer (at 64 samples a drop moves in steps of 1.6 points,
   so these rank coarsely), and the `refine_top` most sensitive ones; most sensitive first, while the time
   budget lasts (by default half the quick pass's time; `math.inf` refines them all). A row says how many
   samples it was measured on.

Probes run in this process one after another, or on an `Executor` (core/executor.py) in parallel: each
worker receives the model bytes, samples and float outputs once. Both paths run the same probe function on
the same inputs, so they give identical reports. Results are kept in a `SensitivityCache` by (model digest,
data digest, calibration digest, layer, setting, samples): a repeat sweep recomputes nothing.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from slimscope.core.data.dataset import Dataset
from slimscope.core.data.fit import fit_to_model
from slimscope.core.errors import DatasetError, RecipeError
from slimscope.core.evaluate.report import _json_ready
from slimscope.core.executor import Executor, WorkerContext
from slimscope.core.layers import find_layers
from slimscope.core.model import LoadedModel
from slimscope.core.optimize import OptimizeCache
from slimscope.core.quantize.calibration import model_digest
from slimscope.core.sensitivity_probe import (
    ProbeOutcome,
    ProbeSetting,
    ProbeState,
    ProbeTask,
    iter_probe,
    probe_payload,
    probe_settings,
    reference_outputs,
    run_probe,
    setup_probe_worker,
)
from slimscope.core.tasks import Progress, Task

QUICK_SAMPLES = 64
DEFAULT_MAX_SAMPLES = 512
REFINE_TOP = 8
QUICK_SHARE = 0.8  # of the progress bar, when a refine pass follows


@dataclass(frozen=True)
class SensitivityRow:
    layer: str
    setting: str  # the setting's label
    setting_key: str
    drop: (
        float | None
    )  # accuracy drop, or 1 − agreement (fractions); None when the output is not a classifier
    sqnr_db: float | None  # of the model outputs; inf when the probe changed nothing
    samples: int
    applied: bool
    form: str
    accuracy: float | None = None  # the probed model's, on these samples
    baseline: float | None = None  # the float model's, on the same samples
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _json_ready(self.__dict__)


@dataclass(frozen=True)
class SensitivityReport:
    metric: str  # "accuracy", "agreement" or "sqnr" (drop is None), what `drop` is measured in
    rows: tuple[SensitivityRow, ...]  # most sensitive first: by drop, then by SQNR
    probes: int  # layers × settings
    quick_samples: int
    max_samples: int
    complete: bool  # False in the partial reports a sweep streams
    notes: tuple[str, ...] = ()

    def most_sensitive(self, setting_key: str | None = None) -> SensitivityRow | None:
        return next((row for row in self.rows if setting_key in (None, row.setting_key)), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (infinite SQNR becomes "inf")."""
        raw = {key: value for key, value in self.__dict__.items() if key != "rows"}
        return _json_ready(raw | {"rows": [row.to_dict() for row in self.rows]})


@dataclass
class SensitivityCache:
    """Probe outcomes and float outputs by content, for repeat sweeps; keep one per window or session.
    `optimize` is the optimizer's cache (calibration ranges) used by probes run in this process."""

    max_outcomes: int = 50_000
    optimize: OptimizeCache = field(default_factory=OptimizeCache)
    outcomes: OrderedDict[tuple, ProbeOutcome] = field(default_factory=OrderedDict)
    references: OrderedDict[tuple, list[np.ndarray]] = field(default_factory=OrderedDict)
    hits: int = 0

    def get(self, key: tuple) -> ProbeOutcome | None:
        found = self.outcomes.get(key)
        if found is not None:
            self.hits += 1
            self.outcomes.move_to_end(key)
        return found

    def put(self, key: tuple, outcome: ProbeOutcome) -> None:
        self.outcomes[key] = outcome
        while len(self.outcomes) > self.max_outcomes:
            self.outcomes.popitem(last=False)


def iter_sensitivity(
    loaded: LoadedModel,
    data: Dataset,
    settings: str | Sequence[str | ProbeSetting] | None = None,
    *,
    calibration: Dataset | np.ndarray | None = None,
    executor: Executor | None = None,
    max_samples: int = DEFAULT_MAX_SAMPLES,
    quick_samples: int = QUICK_SAMPLES,
    refine_top: int = REFINE_TOP,
    refine_budget_s: float | None = None,
    layers: Sequence[str] | None = None,
    cache: SensitivityCache | None = None,
) -> Task[SensitivityReport]:
    """Sweep every layer (or `layers`) with every setting (keys such as "int8,sparse50", or ProbeSetting
    objects; None: all defaults). Yields Progress whose `partial` is the report so far after each result;
    returns the complete report. Closing the generator cancels (and stops the executor's busy workers)."""
    sweep = _Sweep.start(loaded, data, probe_settings(settings), calibration, max_samples, quick_samples,
                         layers, cache if cache is not None else SensitivityCache())  # fmt: skip
    yield Progress(0.0, f"Probing {sweep.probes} layer settings", sweep.report(False))
    refining = sweep.samples > sweep.quick
    quick_span = QUICK_SHARE if refining else 1.0
    quick = [ProbeTask(layer, setting, sweep.quick) for setting in sweep.by_cost for layer in sweep.layers]
    computing = yield from sweep.run(quick, executor, (0.0, quick_span), deadline=math.inf)
    if refining:
        # Half the time the quick pass spent computing: none when it all came from the cache, so that a
        # repeat sweep is instant and returns what the first one did.
        budget = refine_budget_s if refine_budget_s is not None else 0.5 * computing
        tasks = [
            ProbeTask(row.layer, sweep.setting(row), sweep.samples) for row in sweep.to_refine(refine_top)
        ]
        yield from sweep.run(tasks, executor, (quick_span, 1.0), deadline=time.monotonic() + budget)
    return sweep.report(True)


@dataclass
class _Sweep:
    """The state of one sweep: what to probe, the content keys, and the outcomes so far."""

    loaded: LoadedModel
    data: Dataset
    settings: tuple[ProbeSetting, ...]
    layers: list[str]
    calibration: np.ndarray | None
    quick: int
    cache: SensitivityCache
    key: tuple[str, str, str]  # model, data and calibration digests
    notes: list[str]
    outcomes: dict[tuple[str, str], ProbeOutcome] = field(default_factory=dict)
    _state: ProbeState | None = None
    _context: WorkerContext | None = None

    @classmethod
    def start(cls, loaded, data, settings, calibration, max_samples, quick_samples, layers, cache) -> _Sweep:
        data = fit_to_model(data.head(max_samples), loaded.model)
        if len(data) == 0:
            raise DatasetError(f"The data from '{data.source}' holds no samples.")
        names = [layer.name for layer in find_layers(loaded.model, {})]
        if layers is not None:
            missing = [name for name in layers if name not in names]
            if missing:
                raise RecipeError(f"The model has no layer named {missing[0]!r}.", layer=missing[0])
            names = [name for name in names if name in set(layers)]
        notes: list[str] = []
        calib = None
        if any(setting.quantize is not None for setting in settings):
            if calibration is None:
                calib = data.x
                notes.append("Calibrated on the evaluation data (no calibration data given).")
            else:
                calib = (
                    fit_to_model(calibration, loaded.model).x
                    if isinstance(calibration, Dataset)
                    else calibration
                )
        calib_digest = "none" if calib is None else _array_digest(np.asarray(calib))
        key = (model_digest(loaded.model), data.fingerprint, calib_digest)
        quick = max(1, min(quick_samples, len(data)))
        return cls(loaded, data, settings, names, calib, quick, cache, key, notes)

    @property
    def samples(self) -> int:
        return len(self.data)

    @property
    def probes(self) -> int:
        return len(self.layers) * len(self.settings)

    @property
    def by_cost(self) -> list[ProbeSetting]:
        return sorted(self.settings, key=lambda setting: setting.cost_rank)

    def setting(self, row: SensitivityRow) -> ProbeSetting:
        return next(setting for setting in self.settings if setting.key == row.setting_key)

    def run(
        self, tasks: list[ProbeTask], executor: Executor | None, span: tuple[float, float], deadline: float
    ) -> Generator[Progress, None, float]:
        """Probe `tasks` (cached ones first), yielding the report after each outcome; return the seconds
        spent computing (0 when every outcome came from the cache)."""
        todo = []
        for task in tasks:
            cached = self.cache.get(self._cache_key(task))
            if cached is None:
                todo.append(task)
            else:
                self.outcomes[(task.layer, task.setting.key)] = cached
        done = len(tasks) - len(todo)
        if done:
            yield self._progress(span, done, len(tasks), f"{done} results from the cache")
        if not todo:
            return 0.0
        started = time.monotonic()
        timed = _until(todo, deadline)
        results = self._sequential(timed) if executor is None else self._parallel(timed, executor)
        try:
            for outcome in results:
                if isinstance(outcome, Progress):  # a sequential probe's own step (lets closing cancel it)
                    yield replace(outcome, fraction=self._fraction(span, done, len(tasks)), partial=None)
                    continue
                self.cache.put(self._cache_key(outcome), outcome)
                self.outcomes[(outcome.layer, outcome.setting.key)] = outcome
                done += 1
                message = f"{outcome.layer} ({outcome.setting.label}): {done}/{len(tasks)}"
                yield self._progress(span, done, len(tasks), message)
        finally:
            results.close()
        return time.monotonic() - started

    def _sequential(self, tasks: Iterable[ProbeTask]) -> Generator[Progress | ProbeOutcome, None, None]:
        state = self._probe_state(threads=0)
        for task in tasks:
            outcome = yield from iter_probe(state, task)
            yield outcome

    def _parallel(
        self, tasks: Iterable[ProbeTask], executor: Executor
    ) -> Generator[ProbeOutcome, None, None]:
        tasks = iter(tasks)
        first = next(tasks, None)  # the payload (float outputs) is built only when there is work
        if first is None:
            return
        if self._context is None:
            state = self._probe_state(threads=executor.threads_per_worker)
            self._context = WorkerContext(setup_probe_worker, probe_payload(state))
        results = executor.map_unordered(run_probe, _chain(first, tasks), self._context)
        try:
            yield from results
        finally:
            results.close()

    def _probe_state(self, threads: int) -> ProbeState:
        if self._state is None:
            key = (*self.key, self.samples)
            reference = self.cache.references.get(key)
            if reference is None:
                reference = reference_outputs(self.loaded.model, self.data.x)
                self.cache.references[key] = reference
                while len(self.cache.references) > 2:
                    self.cache.references.popitem(last=False)
            self._state = ProbeState(
                self.loaded, self.data.x, self.data.y, reference, self.calibration, 0, self.cache.optimize
            )
        return replace(self._state, threads=threads)

    def _cache_key(self, task: ProbeTask | ProbeOutcome) -> tuple:
        setting = task.setting
        return (*self.key, task.layer, setting.prune, setting.quantize, task.samples)

    def to_refine(self, top: int) -> list[SensitivityRow]:
        """Rows the quick pass ranks coarsely: any that changed a top-1 answer, and the `top` most sensitive."""
        rows = [row for row in self.report(False).rows if row.applied]
        outcomes = self.outcomes
        return [
            row
            for rank, row in enumerate(rows)
            if rank < top or _changed(outcomes[(row.layer, row.setting_key)])
        ]

    def report(self, complete: bool) -> SensitivityReport:
        rows = [_row(outcome) for outcome in self.outcomes.values()]
        order = {name: index for index, name in enumerate(self.layers)}
        settings = {setting.key: index for index, setting in enumerate(self.settings)}
        rows.sort(key=lambda row: (-(row.drop or 0.0), _sqnr_key(row.sqnr_db),
                                   order[row.layer], settings[row.setting_key]))  # fmt: skip
        metric = _metric(self.outcomes.values(), self.data.y is not None)
        return SensitivityReport(
            metric, tuple(rows), self.probes, self.quick, self.samples, complete, tuple(self.notes)
        )

    def _fraction(self, span: tuple[float, float], done: int, total: int) -> float:
        return span[0] + (span[1] - span[0]) * (done / total if total else 1.0)

    def _progress(self, span: tuple[float, float], done: int, total: int, message: str) -> Progress:
        return Progress(self._fraction(span, done, total), message, self.report(False))


def _row(outcome: ProbeOutcome) -> SensitivityRow:
    accuracy = outcome.accuracy
    if accuracy is not None:
        drop: float | None = accuracy["original"] - accuracy["optimized"]
    else:
        drop = None if outcome.agreement is None else 1.0 - outcome.agreement
    return SensitivityRow(
        layer=outcome.layer,
        setting=outcome.setting.label,
        setting_key=outcome.setting.key,
        drop=drop,
        sqnr_db=outcome.sqnr_db,
        samples=outcome.samples,
        applied=outcome.applied,
        form=outcome.form,
        accuracy=None if accuracy is None else accuracy["optimized"],
        baseline=None if accuracy is None else accuracy["original"],
        note=outcome.note,
    )


def _changed(outcome: ProbeOutcome) -> bool:
    return outcome.agreement is not None and outcome.agreement < 1.0


def _metric(outcomes: Iterable[ProbeOutcome], labelled: bool) -> str:
    """What `drop` measures; before the first outcome, what it will measure for a classifier."""
    first = next(iter(outcomes), None)
    if first is None:
        return "accuracy" if labelled else "agreement"
    if first.agreement is None:
        return "sqnr"
    return "accuracy" if first.accuracy is not None else "agreement"


def _sqnr_key(value: float | None) -> float:
    return math.inf if value is None else value


def _until(tasks: list[ProbeTask], deadline: float) -> Iterator[ProbeTask]:
    """The tasks in order, until the deadline passes (checked as each is handed out)."""
    for task in tasks:
        if time.monotonic() >= deadline:
            return
        yield task


def _chain(first: ProbeTask, rest: Iterator[ProbeTask]) -> Iterator[ProbeTask]:
    yield first
    yield from rest


def _array_digest(values: np.ndarray) -> str:
    digest = hashlib.blake2b(f"{values.dtype.str}{values.shape}".encode(), digest_size=16)
    digest.update(np.ascontiguousarray(values).data.cast("B"))
    return digest.hexdigest()
