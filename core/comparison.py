"""`iter_compare`: optimize a model with a recipe, then evaluate it against the original (one task).

This is what the window's live comparison runs after every recipe edit: quick by design (a capped number
of samples, latency at one thread within a short budget, per-layer errors on a few samples), so that it
can be redone on each edit. The headline numbers arrive first, as a partial `Comparison`; latency and
per-layer errors follow in the returned one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnx

from slimscope.core.data import Dataset, PreprocessSpec, fit_to_model, iter_load_dataset
from slimscope.core.errors import DatasetError
from slimscope.core.evaluate import iter_evaluate, layer_tensors
from slimscope.core.evaluate.footprint import Footprint
from slimscope.core.evaluate.report import EvalReport
from slimscope.core.model import LoadedModel
from slimscope.core.optimize import OptimizeCache, OptimizeResult, iter_optimize
from slimscope.core.recipe import Recipe
from slimscope.core.tasks import Task, scaled
from slimscope.core.weight_views import WeightView, iter_weight_views

COMPARISON_SAMPLES = 300  # evaluation samples a live comparison uses: enough to see a drop, quick to run
LIVE_LATENCY_BUDGET_S = 0.6  # one thread count, per edit: a stable median for small models, bounded for big
LIVE_LAYER_SAMPLES = 32  # per-layer SQNR: enough to rank the layers


@dataclass(frozen=True)
class Comparison:
    """An optimized model and what it cost and gained, for the recipe it was made with."""

    recipe: Recipe
    optimized: OptimizeResult
    report: EvalReport
    views: dict[str, WeightView] = field(default_factory=dict)  # optimized weights per layer, with details
    # One evaluation sample's input shape (batch 1): the size a model with free dims was compared at.
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def iter_compare(
    loaded: LoadedModel,
    recipe: Recipe,
    evaluation: Path,
    calibration: Path | None = None,
    *,
    cache: OptimizeCache | None = None,
    max_samples: int | None = COMPARISON_SAMPLES,
    details: bool = True,
    original_footprint: Footprint | None = None,
) -> Task[Comparison]:
    """Optimize `loaded` with `recipe` (calibrating on `calibration`, else on `evaluation`), then compare
    the result with the original on at most `max_samples` samples of `evaluation`.

    With `details`, the headline comparison is yielded as a partial result, then latency (one thread) and
    per-layer errors are measured and the returned comparison holds them too."""
    spec = PreprocessSpec.from_dict(recipe.data.get("preprocess"))
    calib = yield from iter_read_data(calibration or evaluation, spec, loaded.model, None)
    result = yield from scaled(iter_optimize(loaded, recipe, calib.x, cache=cache), 0.0, 0.6)
    data = yield from iter_read_data(evaluation, spec, loaded.model, max_samples)
    task = iter_evaluate(
        loaded.model,
        result.model,
        data,
        latency=details,
        per_layer=layer_tensors(loaded.model) if details else None,
        latency_threads=(1,),
        latency_budget_s=LIVE_LATENCY_BUDGET_S,
        per_layer_samples=LIVE_LAYER_SAMPLES,
        preliminary=True,
        known_footprints=None if original_footprint is None else {"original": original_footprint},
    )
    end = 0.95 if details else 1.0
    shapes = {data.input_name or "": (1, *data.sample_shape)}

    def headline(partial: object) -> object:  # the preliminary report becomes a partial Comparison
        if isinstance(partial, EvalReport):
            return Comparison(recipe, result, partial, input_shapes=shapes)
        return partial

    report = yield from scaled(task, 0.6, end, headline)
    views = {}
    if details:
        views = yield from scaled(
            iter_weight_views(loaded.model, result.model, set(result.sparsity)), end, 1.0
        )
    return Comparison(recipe, result, report, views, input_shapes=shapes)


def iter_read_data(
    path: Path, preprocess: PreprocessSpec | dict | None, model: onnx.ModelProto, limit: int | None
) -> Task[Dataset]:
    """At most `limit` samples of the data at `path`, preprocessed and fitted to `model`'s input."""
    if not Path(path).exists():
        raise DatasetError(f"The data '{path}' does not exist.")
    dataset = yield from iter_load_dataset(path, preprocess, limit)
    return fit_to_model(dataset, model)
