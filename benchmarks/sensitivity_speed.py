"""How long a full sensitivity sweep takes, and how soon its first result arrives.

Two models: the demo (its labelled test set, its calibration set) and a ResNet-18-shaped network at
64 px with 128 random images (unlabelled: the drop is 1 − top-1 agreement; the same images calibrate).
Every default setting (int8, int4 weights, 50 % and 80 % sparsity, channels 30 %) on every layer, with
the default scheme (quick pass on 64 samples, then refinement for half the quick pass's time), in this
process and on a local worker pool. Goals: demo ≤ 10 s, ResNet-18 ≤ 2 min, first result ≤ 2 s.

    .venv/bin/python benchmarks/sensitivity_speed.py [--models demo,resnet18] [--modes sequential,pool]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from resnet_onnx import build_resnet18  # noqa: E402

from slimscope.core.data import Dataset, PreprocessSpec, load_dataset  # noqa: E402
from slimscope.core.executor import LocalExecutor  # noqa: E402
from slimscope.core.loading import load_model  # noqa: E402
from slimscope.core.sensitivity import iter_sensitivity  # noqa: E402
from slimscope.resources import DEMO_CALIBRATION, DEMO_DATA, DEMO_MODEL  # noqa: E402


def demo_inputs(folder: Path):
    spec = PreprocessSpec.from_dict(None)
    return load_model(DEMO_MODEL), load_dataset(DEMO_DATA, spec), load_dataset(DEMO_CALIBRATION, spec)


def resnet_inputs(folder: Path):
    path = build_resnet18(folder / "resnet18_64.onnx", 64)
    x = np.random.default_rng(0).standard_normal((128, 3, 64, 64)).astype(np.float32)
    data = Dataset(x, None, None, "random images")
    return load_model(path), data, data


MODELS = {"demo": demo_inputs, "resnet18": resnet_inputs}


def timed_sweep(loaded, data, calib, executor) -> dict:
    started = time.perf_counter()
    first = None
    task = iter_sensitivity(loaded, data, calibration=calib, executor=executor)
    while True:
        try:
            progress = next(task)
        except StopIteration as stop:
            report = stop.value
            break
        if first is None and progress.partial is not None and progress.partial.rows:
            first = time.perf_counter() - started
    total = time.perf_counter() - started
    refined = sum(row.samples > report.quick_samples for row in report.rows)
    worst = report.rows[0]
    return {"total": total, "first": first, "rows": len(report.rows), "refined": refined,
            "worst": f"{worst.layer} ({worst.setting})"}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo,resnet18")
    parser.add_argument("--modes", default="sequential,pool")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.models.split(","):
            loaded, data, calib = MODELS[name](Path(folder))
            for mode in args.modes.split(","):
                # A fresh process pool each time: its start-up (spawn, imports) is part of the cost.
                executor = LocalExecutor() if mode == "pool" else None
                try:
                    result = timed_sweep(loaded, data, calib, executor)
                finally:
                    if executor is not None:
                        executor.close()
                label = mode if executor is None else f"pool ({executor.workers} workers)"
                rows.append((name, label, result))
                print(f"  done: {name} {label}: {result['total']:.1f} s", file=sys.stderr)
    print(f"\nSensitivity sweep, all default settings ({os.cpu_count()} CPUs)")
    print(
        f"{'model':<9} {'mode':<20} {'probes':>6} {'refined':>7} {'first s':>8} {'total s':>8}  most sensitive"
    )
    for name, label, r in rows:
        print(
            f"{name:<9} {label:<20} {r['rows']:>6} {r['refined']:>7} {r['first']:>8.2f} {r['total']:>8.1f}  {r['worst']}"
        )


if __name__ == "__main__":
    main()
