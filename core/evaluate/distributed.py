"""Comparing the two models' outputs on a large data set with an `Executor` (a local process pool or a Ray
cluster): the data is cut into chunks, each worker compares its chunks with sessions it builds once, and the
counts are merged (`OutputComparison.merge`) as chunks finish, streaming running numbers like the
in-process path. Accuracy and agreement are identical to it; SQNR and cosine sum the same terms in another
order (equal to about 1e-12)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from slimscope.core.data.dataset import Dataset
from slimscope.core.evaluate.logits import plan_measured_outputs
from slimscope.core.evaluate.metrics import OutputComparison
from slimscope.core.evaluate.sessions import batch_step, batches, create_runner
from slimscope.core.executor import Executor, WorkerContext
from slimscope.core.tasks import Progress, Task

CHUNK_SAMPLES = 256  # per work item: large enough to amortize the call, small enough to stream and balance


def setup_comparison_worker(payload: dict[str, Any]) -> dict[str, Any]:
    threads, plan = payload["threads"], payload["plan"]
    models = {role: onnx.load_model_from_string(payload[role]) for role in ("original", "optimized")}
    runners = {
        role: create_runner(model, role, threads, extra_outputs=plan.extra[role])
        for role, model in models.items()
    }
    counts = {role: len(model.graph.output) for role, model in models.items()}
    return {"runners": runners, "plan": plan, "counts": counts}


def compare_chunk(context: dict[str, Any], item: tuple[np.ndarray, np.ndarray | None]) -> OutputComparison:
    x, y = item
    runners, plan, counts = context["runners"], context["plan"], context["counts"]
    comparison = OutputComparison(measured_on=plan.description)
    step = batch_step(list(runners.values()))
    for start, batch in batches(x, step):
        labels = None if y is None else y[start : start + len(batch)]
        (outputs_a, measured_a), (outputs_b, measured_b) = (
            plan.split(runners[role].run_all(batch), counts[role]) for role in ("original", "optimized")
        )
        comparison.add(outputs_a, outputs_b, labels, (measured_a, measured_b))
    return comparison


def iter_compare_outputs_on(
    executor: Executor, original: onnx.ModelProto, optimized: onnx.ModelProto, data: Dataset
) -> Task[OutputComparison]:
    """The output comparison of `iter_evaluate`, on `executor`'s workers."""
    yield Progress(0.0, f"Sending the models to {executor.workers} workers")
    payload = {
        "original": original.SerializeToString(),
        "optimized": optimized.SerializeToString(),
        "threads": executor.threads_per_worker,
        "plan": plan_measured_outputs(original, optimized),
    }
    chunks = [
        (
            data.x[start : start + CHUNK_SAMPLES],
            None if data.y is None else data.y[start : start + CHUNK_SAMPLES],
        )
        for start in range(0, len(data), CHUNK_SAMPLES)
    ]
    total, labelled = len(data), data.y is not None
    merged = OutputComparison()
    results = executor.map_unordered(compare_chunk, chunks, WorkerContext(setup_comparison_worker, payload))
    try:
        for part in results:
            merged.merge(part)
            message = f"Comparing outputs: {merged.samples}/{total} samples"
            yield Progress(merged.samples / total, message, merged.running(total, labelled))
    finally:
        results.close()
    return merged
