"""`iter_compare`: optimize a model with a recipe, then evaluate it against the original (one task).

This is what the window's live comparison runs after every recipe edit: quick by design (no latency
timing, no per-layer errors, a capped number of samples), so that it can be redone on each edit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from slimscope.core.data import PreprocessSpec, fit_to_model, iter_load_dataset
from slimscope.core.errors import DatasetError
from slimscope.core.evaluate import iter_evaluate
from slimscope.core.evaluate.report import EvalReport
from slimscope.core.model import LoadedModel
from slimscope.core.optimize import OptimizeCache, OptimizeResult, iter_optimize
from slimscope.core.recipe import Recipe
from slimscope.core.tasks import Progress, Task

COMPARISON_SAMPLES = 300  # evaluation samples a live comparison uses: enough to see a drop, quick to run


@dataclass(frozen=True)
class Comparison:
    """An optimized model and what it cost and gained, for the recipe it was made with."""

    recipe: Recipe
    optimized: OptimizeResult
    report: EvalReport


def iter_compare(
    loaded: LoadedModel,
    recipe: Recipe,
    evaluation: Path,
    calibration: Path | None = None,
    *,
    cache: OptimizeCache | None = None,
    max_samples: int | None = COMPARISON_SAMPLES,
) -> Task[Comparison]:
    """Optimize `loaded` with `recipe` (calibrating on `calibration`, else on `evaluation`), then compare
    the result with the original on at most `max_samples` samples of `evaluation`."""
    spec = PreprocessSpec.from_dict(recipe.data.get("preprocess"))
    calib = yield from _read(calibration or evaluation, spec, loaded, None)
    result = yield from _scaled(iter_optimize(loaded, recipe, calib.x, cache=cache), 0.0, 0.6)
    data = yield from _read(evaluation, spec, loaded, max_samples)
    report = yield from _scaled(
        iter_evaluate(loaded.model, result.model, data, latency=False, per_layer=None), 0.6, 1.0
    )
    return Comparison(recipe, result, report)


def _read(path: Path, spec: PreprocessSpec, loaded: LoadedModel, limit: int | None):
    if not Path(path).exists():
        raise DatasetError(f"The data '{path}' does not exist.")
    dataset = yield from iter_load_dataset(path, spec, limit)
    return fit_to_model(dataset, loaded.model)


def _scaled(task: Task, start: float, end: float):
    """Re-yield `task`'s progress mapped into [start, end], keeping its partial results."""
    try:
        while True:
            progress = next(task)
            fraction = None if progress.fraction is None else start + (end - start) * progress.fraction
            yield Progress(fraction, progress.message, progress.partial)
    except StopIteration as stop:
        return stop.value
    finally:
        task.close()
