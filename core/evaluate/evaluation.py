"""Evaluate an optimized model against its original: outputs, per-layer error, latency and size.

`iter_evaluate` is a task generator: it yields `Progress` (during the output comparison with a
`RunningMetrics` partial result, so a GUI can show accuracy and agreement as they build up) and returns
the `EvalReport`. Closing it cancels between batches.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import onnx

from slimscope.core.data.dataset import Dataset
from slimscope.core.data.fit import fit_to_model
from slimscope.core.errors import DatasetError
from slimscope.core.evaluate.footprint import Footprint, gzip_size, measure_footprint
from slimscope.core.evaluate.latency import available_threads, iter_measure_latency
from slimscope.core.evaluate.logits import plan_measured_outputs
from slimscope.core.evaluate.metrics import OutputComparison
from slimscope.core.evaluate.per_layer import PER_LAYER_SAMPLES, LayerError, iter_layer_errors
from slimscope.core.evaluate.quality_warnings import judge
from slimscope.core.evaluate.report import (
    ROLES,
    EvalReport,
    LatencyComparison,
    footprint_warnings,
    layer_warnings,
)
from slimscope.core.evaluate.sessions import batch_step, batches, create_runner
from slimscope.core.tasks import Progress, Task, run_sync, scaled

if TYPE_CHECKING:
    from slimscope.core.executor import Executor

# Relative cost of each phase, to spread the progress fraction over them.
_PHASE_WEIGHTS = {"outputs": 5.0, "layers": 2.0, "latency": 3.0, "size": 0.5}
LATENCY_RUNS = 300  # at most, per model and thread count
LATENCY_WARMUP = 5
LATENCY_BUDGET_S = 1.5  # per thread count: enough runs for a stable median of a small model
_PARTIAL_RESULTS = 100  # about this many partial results over the output comparison


def iter_evaluate(
    original: onnx.ModelProto,
    optimized: onnx.ModelProto,
    data: Dataset,
    *,
    latency: bool = True,
    per_layer: list[tuple[str, str]] | None = None,
    macs: Mapping[str, int | None] | None = None,
    max_samples: int | None = None,
    latency_threads: tuple[int, ...] | None = None,
    latency_budget_s: float = LATENCY_BUDGET_S,
    per_layer_samples: int = PER_LAYER_SAMPLES,
    preliminary: bool = False,
    known_footprints: Mapping[str, Footprint] | None = None,
    executor: Executor | None = None,
) -> Generator[Progress, None, EvalReport]:
    """Compare `optimized` with `original` on `data`; per_layer: (layer name, tensor name) pairs.

    `latency_threads` None times at 1 thread and at all cores. With `preliminary`, a report without latency
    and per-layer errors is yielded as a partial result as soon as outputs and sizes are known, so that a
    window can show the headline numbers while the slower measurements go on.
    """
    data = fit_to_model(data.head(max_samples), original)
    if len(data) == 0:
        raise DatasetError(f"The data from '{data.source}' holds no samples.")
    fit_to_model(data, optimized)
    phases = _spans(
        ["outputs", "size", *(["layers"] if per_layer else []), *(["latency"] if latency else [])]
    )
    if executor is None:
        outputs = _iter_compare_outputs(original, optimized, data)
    else:  # a large data set on a process pool or a Ray cluster
        from slimscope.core.evaluate.distributed import iter_compare_outputs_on

        outputs = iter_compare_outputs_on(executor, original, optimized, data)
    comparison = yield from scaled(outputs, *phases["outputs"])
    yield Progress(phases["size"][0], "Measuring model sizes")
    known = dict(known_footprints or {})
    early = preliminary and bool(per_layer or latency)  # gzip (slow for big models) waits for the details
    footprints = {
        role: known[role] if role in known else measure_footprint(model, compress=not early)
        for role, model in (("original", original), ("optimized", optimized))
    }
    labelled = data.y is not None
    if early:
        report = _report(comparison, labelled, None, footprints, (), macs, original)
        yield Progress(phases["size"][1], "Measuring per-layer errors, latency and gzip size", report)
        footprints = {
            role: fp if fp.gzip_bytes is not None else replace(fp, gzip_bytes=gzip_size(model))
            for (role, fp), model in zip(footprints.items(), (original, optimized), strict=True)
        }
    layers: tuple[LayerError, ...] = ()
    if per_layer:
        errors = iter_layer_errors(original, optimized, data, per_layer, max_samples=per_layer_samples)
        layers = tuple((yield from scaled(errors, *phases["layers"])))
    timings = None
    if latency:
        timing = _iter_latency(original, optimized, data, latency_threads, latency_budget_s)
        timings = yield from scaled(timing, *phases["latency"])
    return _report(comparison, labelled, timings, footprints, layers, macs, original)


def _report(
    comparison: OutputComparison,
    labelled: bool,
    timings: tuple[LatencyComparison, ...] | None,
    footprints: Mapping[str, Footprint],
    layers: tuple[LayerError, ...],
    macs: Mapping[str, int | None] | None,
    original: onnx.ModelProto,
) -> EvalReport:
    accuracy = comparison.accuracy(labelled)
    sizes = {role: footprints[role].size_bytes for role in ROLES}
    verdict = judge(
        accuracy=accuracy, agreement=comparison.agreement(), sqnr_db=comparison.sqnr_db(),
        sqnr_on=comparison.measured_on, latency=timings, sizes=sizes, layers=layers,
    )  # fmt: skip
    warnings = [
        *verdict.warnings,
        *_output_warnings(comparison, original),
        *footprint_warnings(footprints),
        *layer_warnings(layers),
    ]
    return EvalReport(
        samples=comparison.samples,
        accuracy=accuracy,
        agreement=comparison.agreement(),
        sqnr_db=comparison.sqnr_db(),
        cosine=comparison.cosine(),
        latency_ms=timings,
        size_bytes=sizes,
        gzip_bytes={role: footprints[role].gzip_bytes for role in ROLES},
        nonzero_params={role: footprints[role].nonzero_params for role in ROLES},
        macs=dict(macs) if macs is not None else None,
        layers=layers,
        warnings=tuple(warnings),
        sqnr_on=comparison.measured_on,
        flagged=verdict.flagged,
    )


def evaluate(
    original: onnx.ModelProto, optimized: onnx.ModelProto, data: Dataset, **options: Any
) -> EvalReport:
    """`iter_evaluate` run to its end."""
    return run_sync(iter_evaluate(original, optimized, data, **options))


def _iter_compare_outputs(
    original: onnx.ModelProto, optimized: onnx.ModelProto, data: Dataset
) -> Task[OutputComparison]:
    """Run both models batch by batch (in turn, never at once) and compare their outputs."""
    yield Progress(0.0, "Preparing the models")
    plan = plan_measured_outputs(original, optimized)
    runner_a = create_runner(original, "original", extra_outputs=plan.extra["original"])
    runner_b = create_runner(optimized, "optimized", extra_outputs=plan.extra["optimized"])
    counts = (len(original.graph.output), len(optimized.graph.output))
    comparison = OutputComparison(measured_on=plan.description)
    total, labelled = len(data), data.y is not None
    step = batch_step([runner_a, runner_b])
    every = max(1, -(-total // step) // _PARTIAL_RESULTS)
    for index, (start, batch) in enumerate(batches(data.x, step)):
        labels = None if data.y is None else data.y[start : start + len(batch)]
        (outputs_a, measured_a), (outputs_b, measured_b) = (
            plan.split(runner.run_all(batch), count)
            for runner, count in zip((runner_a, runner_b), counts, strict=True)
        )
        comparison.add(outputs_a, outputs_b, labels, (measured_a, measured_b))
        if (index + 1) % every == 0 or comparison.samples == total:
            message = f"Comparing outputs: {comparison.samples}/{total} samples"
            yield Progress(comparison.samples / total, message, comparison.running(total, labelled))
    return comparison


def _iter_latency(
    original: onnx.ModelProto,
    optimized: onnx.ModelProto,
    data: Dataset,
    threads: tuple[int, ...] | None,
    budget_s: float,
) -> Task[tuple[LatencyComparison, ...]]:
    """Timings at each thread count (default: 1 thread and, when there are more cores, all of them)."""
    counts = sorted(set(threads) if threads else {1, available_threads()})
    rows = []
    models = {"original": original, "optimized": optimized}
    for position, count in enumerate(counts):
        task = iter_measure_latency(
            models, count, LATENCY_RUNS, LATENCY_WARMUP, sample=data.x, budget_s=budget_s
        )
        stats = yield from scaled(task, position / len(counts), (position + 1) / len(counts))
        rows.append(LatencyComparison(count, stats["original"], stats["optimized"]))
    return tuple(rows)


def _output_warnings(comparison: OutputComparison, original: onnx.ModelProto) -> list[str]:
    names = [output.name for output in original.graph.output]
    found = []
    for index, why in sorted(comparison.mismatches.items()):
        found.append(f"Output '{names[index]}' has {why}; it is left out of SQNR and cosine.")
    if comparison.output_counts is not None:
        count_a, count_b = comparison.output_counts
        found.append(
            f"The optimized model has {count_b} outputs, the original {count_a}; "
            f"only the first {min(count_a, count_b)} are compared."
        )
    for role in ROLES:
        if role in comparison.nonfinite:
            found.append(f"The {role} model's outputs contain NaN or infinite values.")
    return found


def _spans(phases: list[str]) -> dict[str, tuple[float, float]]:
    total = sum(_PHASE_WEIGHTS[phase] for phase in phases)
    spans, start = {}, 0.0
    for phase in phases:
        end = start + _PHASE_WEIGHTS[phase] / total
        spans[phase] = (start, end)
        start = end
    return spans
