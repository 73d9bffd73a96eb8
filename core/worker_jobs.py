"""The jobs the window's worker processes run (`core/task_process.py` runs them by name).

Each job takes the child's `ChildState` (the open model and what repeat runs reuse) and plain-data
arguments, and returns a task generator; its progress and result travel back to the window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimscope.core.errors import OptimizeError
from slimscope.core.model import LoadedModel
from slimscope.core.tasks import Task


@dataclass
class ChildState:
    """What the child keeps between jobs: the open model and what repeat runs reuse."""

    loaded: LoadedModel | None = None
    cache: Any = None  # an OptimizeCache, made when a model arrives
    extra: dict[str, Any] = field(default_factory=dict)


def _open(state: ChildState, path: Path, trust: bool, input_shapes: list[tuple[int, ...]] | None):
    """Load and inspect a model file; on success the child keeps it as the model later jobs work on.

    Parsing, checking and converting a file the user just picked is the riskiest work Slimscope does;
    here a crash or a runaway allocation ends the child, not the window."""
    from slimscope.core.inspection import iter_inspect
    from slimscope.core.loading import iter_load_model

    loaded = yield from iter_load_model(path, trust=trust, input_shapes=input_shapes)
    report = yield from iter_inspect(loaded)
    set_model(state, loaded)
    return report


def _load(state: ChildState, path: Path, trust: bool, input_shapes: list[tuple[int, ...]] | None):
    """Load a model file without inspecting it (the command line's verbs); the child keeps it like "open"."""
    from slimscope.core.loading import iter_load_model

    loaded = yield from iter_load_model(path, trust=trust, input_shapes=input_shapes)
    set_model(state, loaded)
    return loaded


def _optimize(state: ChildState, recipe, calibration=None):
    """Apply a recipe to the open model (pruning, then onnxruntime's quantizer); returns the OptimizeResult.
    Calibration holds model-ready input samples."""
    from slimscope.core.optimize import iter_optimize

    if state.loaded is None:
        raise OptimizeError("No model was sent to the optimizer process.")
    return (yield from iter_optimize(state.loaded, recipe, calibration, cache=state.cache))


def _compare(state: ChildState, recipe, evaluation: Path, calibration: Path | None, details: bool = True):
    from slimscope.core.comparison import iter_compare
    from slimscope.core.evaluate.footprint import Footprint

    if state.loaded is None:
        raise OptimizeError("No model was sent to the optimizer process.")
    comparison = yield from iter_compare(
        state.loaded,
        recipe,
        evaluation,
        calibration,
        cache=state.cache,
        details=details,
        original_footprint=state.extra.get("footprint"),
    )
    report = comparison.report
    if report.gzip_bytes.get("original") is not None:  # the original's footprint, measured once per model
        state.extra["footprint"] = Footprint(
            report.size_bytes["original"], report.gzip_bytes["original"], report.nonzero_params["original"]
        )
    return comparison


def _read_data(state: ChildState, path: Path, preprocess: dict | None, limit: int | None):
    from slimscope.core.comparison import iter_read_data

    assert state.loaded is not None
    return (yield from iter_read_data(path, preprocess, state.loaded.model, limit))


def _data(state: ChildState, path: Path, preprocess: dict | None, limit: int | None = None):
    """Read evaluation or calibration data (the command line's verbs): decoding a file the user picked,
    like reading a model, runs under the worker's memory and time limits. Fitted to the model by the caller."""
    from slimscope.core.data import iter_load_dataset

    return (yield from iter_load_dataset(path, preprocess, limit))


def _sensitivity_cache(state: ChildState):
    from slimscope.core.sensitivity import SensitivityCache

    return state.extra.setdefault("sensitivity", SensitivityCache())  # per model: repeat sweeps are instant


def _sensitivity(
    state: ChildState,
    evaluation: Path,
    calibration: Path | None,
    preprocess: dict | None = None,
    settings: str | None = None,
    max_samples: int = 512,
    ray_address: str | None = None,
):
    """A per-layer sensitivity sweep of the open model; partial results are the report so far. With
    `ray_address`, the probes run on that Ray cluster (results identical to the local sweep)."""
    from slimscope.core.executor import RayExecutor
    from slimscope.core.sensitivity import iter_sensitivity

    if state.loaded is None:
        raise OptimizeError("No model was sent to the optimizer process.")
    data = yield from _read_data(state, evaluation, preprocess, max_samples)
    calib = None if calibration is None else (yield from _read_data(state, calibration, preprocess, None))
    executor = RayExecutor(ray_address) if ray_address else None
    try:
        return (
            yield from iter_sensitivity(
                state.loaded, data, settings, calibration=calib, max_samples=max_samples,
                cache=_sensitivity_cache(state), executor=executor,
            )
        )  # fmt: skip
    finally:
        if executor is not None:
            executor.close()


def _auto(
    state: ChildState,
    evaluation: Path,
    calibration: Path | None,
    preprocess: dict | None,
    max_drop: float,
    goal: str,
    base=None,
    max_samples: int = 1000,
):
    """An automatic recipe for the open model; partial results are the verified candidates (Comparisons)."""
    from slimscope.core.auto_recipe import GOALS, iter_auto_recipe

    if goal not in GOALS:
        raise OptimizeError(f"The goal must be one of {', '.join(GOALS)}, not {goal!r}.")

    if state.loaded is None:
        raise OptimizeError("No model was sent to the optimizer process.")
    data = yield from _read_data(state, evaluation, preprocess, max_samples)
    calib = None if calibration is None else (yield from _read_data(state, calibration, preprocess, None))
    return (
        yield from iter_auto_recipe(
            state.loaded, data, max_drop=max_drop, goal=goal, calibration=calib,
            sensitivity_cache=_sensitivity_cache(state), base=base,
        )
    )  # fmt: skip


def _finetune(
    state: ChildState,
    recipe,
    train: Path,
    val: Path | None,
    calibration: Path | None,
    checkpoint_dir: Path | None,
    resume: bool = False,
):
    """Retrain the open model to `recipe`; partial results are the baseline, then TrainingEvents."""
    from slimscope.core.evaluate.latency import available_threads
    from slimscope.core.train.finetune import iter_finetune
    from slimscope.core.train.train_data import open_training_data

    if state.loaded is None:
        raise OptimizeError("No model was sent to the optimizer process.")
    preprocess = recipe.data.get("preprocess")
    spec = recipe.training
    train_data = open_training_data(train, preprocess, state.loaded.model)
    if val is not None:
        val_data = open_training_data(val, preprocess, state.loaded.model)
    else:
        train_data, val_data = train_data.split(spec.val_fraction, spec.seed)
    calib = None if calibration is None else (yield from _read_data(state, calibration, preprocess, None))
    return (
        yield from iter_finetune(
            state.loaded, recipe, train_data, val_data, calibration=None if calib is None else calib.x,
            checkpoint_dir=checkpoint_dir, resume=resume,
            threads=max(1, available_threads() - 1),  # a core stays for the window and the live comparison
        )
    )  # fmt: skip


# The jobs a child can run, by name: each takes the child's state and the job's arguments, returns a task.
# A job may also be named "package.module:function" (tests use this for jobs of their own).
JOBS: dict[str, Callable[..., Task[Any]]] = {
    "open": _open,
    "load": _load,
    "optimize": _optimize,
    "compare": _compare,
    "data": _data,
    "sensitivity": _sensitivity,
    "auto": _auto,
    "finetune": _finetune,
}


def set_model(state: ChildState, loaded: LoadedModel | None) -> None:
    """A new model for later jobs; what was kept for the previous one goes."""
    from slimscope.core.optimize import OptimizeCache

    state.loaded, state.cache, state.extra = loaded, OptimizeCache(), {}
