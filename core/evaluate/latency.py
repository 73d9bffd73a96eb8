"""Latency of models in onnxruntime at batch 1, measured so that two models can be compared fairly.

The host's speed drifts by up to ~40 % within minutes, so the models are timed interleaved (A, B, B, A,
…): drift then slows both alike and their ratio holds even when absolute times wander. The sessions are
created one after the other with identical options and never run concurrently.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx

from slimscope.core.data.fit import model_input
from slimscope.core.errors import DatasetError
from slimscope.core.evaluate.sessions import ModelRunner, create_runner
from slimscope.core.tasks import Progress, Task, run_sync

_MIN_RUNS = 10  # fewer makes a p90 meaningless
_PROGRESS_SECONDS = 0.2


@dataclass(frozen=True)
class LatencyStats:
    median_ms: float
    p90_ms: float
    threads: int
    runs: int

    def to_dict(self) -> dict[str, float | int]:
        return {"median": self.median_ms, "p90": self.p90_ms, "threads": self.threads, "runs": self.runs}


def available_threads() -> int:
    """CPU cores this process may run on (its affinity, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return max(os.cpu_count() or 1, 1)


def iter_measure_latency(
    models: Mapping[str, onnx.ModelProto],
    threads: int,
    runs: int,
    warmup: int,
    *,
    sample: np.ndarray | None = None,
    budget_s: float | None = None,
) -> Task[dict[str, LatencyStats]]:
    """Time each model `runs` times, interleaved, after `warmup` untimed runs each.

    `sample` is one batch of input (batch 1 unless a model fixes its batch); without it a random input
    of the first model's shape is used. With `budget_s`, `runs` is an upper bound and the number of runs
    is cut to fit the budget, estimated from the warm-up.
    """
    yield Progress(0.0, f"Preparing latency measurement ({threads} thread{'s' if threads != 1 else ''})")
    runners = {name: create_runner(model, name, threads) for name, model in models.items()}
    feeds = {name: _batch_for(runner, sample, models[name]) for name, runner in runners.items()}
    warm_seconds = _warm_up(runners, feeds, max(warmup, 1))
    runs = max(runs, 1)
    if budget_s is not None:
        per_round = sum(sum(seconds) for seconds in warm_seconds.values()) / max(warmup, 1)
        runs = min(runs, max(_MIN_RUNS, int(budget_s / max(per_round, 1e-9))))
    times: dict[str, list[float]] = {name: [] for name in runners}
    last_report = time.perf_counter()
    for round_index in range(runs):
        order = list(runners) if round_index % 2 == 0 else list(reversed(runners))
        for name in order:
            start = time.perf_counter()
            runners[name].run(feeds[name])
            times[name].append(time.perf_counter() - start)
        if time.perf_counter() - last_report > _PROGRESS_SECONDS:
            last_report = time.perf_counter()
            yield Progress(
                (round_index + 1) / runs, f"Timing at {threads} thread(s): run {round_index + 1}/{runs}"
            )
    return {name: _stats(values, threads) for name, values in times.items()}


def measure_latency(
    models: Mapping[str, onnx.ModelProto],
    threads: int,
    runs: int,
    warmup: int,
    *,
    sample: np.ndarray | None = None,
) -> dict[str, LatencyStats]:
    """`iter_measure_latency` run to its end."""
    return run_sync(iter_measure_latency(models, threads, runs, warmup, sample=sample))


def _warm_up(
    runners: Mapping[str, ModelRunner], feeds: Mapping[str, np.ndarray], rounds: int
) -> dict[str, list[float]]:
    """Untimed-for-the-result runs (first runs allocate and page in); their seconds estimate the cost."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            start = time.perf_counter()
            runner.run(feeds[name])
            times[name].append(time.perf_counter() - start)
    return times


def _batch_for(runner: ModelRunner, sample: np.ndarray | None, model: onnx.ModelProto) -> np.ndarray:
    count = runner.batch if runner.fixed_batch else 1
    if sample is None:
        sample = _random_input(model, count)
    sample = sample[:count]
    if len(sample) < count:
        sample = np.concatenate([sample, np.repeat(sample[-1:], count - len(sample), axis=0)])
    return np.ascontiguousarray(sample, dtype=runner.input_dtype)


def _random_input(model: onnx.ModelProto, count: int) -> np.ndarray:
    name, _, dims = model_input(model)
    if dims is None or any(d is None for d in dims[1:]):
        raise DatasetError(
            f"The model's input '{name}' has no fixed shape; give a sample input to time it with."
        )
    rng = np.random.default_rng(0)
    return rng.standard_normal((count, *(int(d or 1) for d in dims[1:]))).astype(np.float32)


def _stats(seconds: list[float], threads: int) -> LatencyStats:
    ms = np.asarray(seconds) * 1000
    return LatencyStats(float(np.median(ms)), float(np.percentile(ms, 90)), threads, len(seconds))
