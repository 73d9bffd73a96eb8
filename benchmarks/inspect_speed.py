"""How long `slimscope inspect --json` takes on a ResNet-50-sized model, against reading its weights once.

Both sides are timed as whole commands (a fresh Python process each, imports included), interleaved
so that drift of the host's speed hits both alike. The baseline is `onnx.load` plus one numpy pass over
every weight. Goal: ratio ≤ 2.0 on the dense model; the 50 %-sparse variant shows the cost of the
per-block zero counts that sparse weights need (dense ones skip them).

    .venv/bin/python benchmarks/inspect_speed.py [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from resnet_onnx import build_resnet50  # noqa: E402

BASELINE = (
    "import sys, onnx, numpy as np\n"
    "from onnx import numpy_helper\n"
    "m = onnx.load(sys.argv[1])\n"
    "total = sum(float(np.abs(numpy_helper.to_array(t)).sum()) for t in m.graph.initializer)\n"
)


def time_command(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


BASELINE_NAME = "onnx.load + one numpy pass"


def _time_interleaved(model: Path, runs: int) -> dict[str, list[float]]:
    commands = {
        BASELINE_NAME: [sys.executable, "-c", BASELINE, str(model)],
        "slimscope inspect --json": [sys.executable, "-m", "slimscope", "inspect", str(model), "--json"],
        "slimscope inspect (table)": [sys.executable, "-m", "slimscope", "inspect", str(model)],
    }
    for command in commands.values():  # warm the page cache and the bytecode caches
        time_command(command)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            times[name].append(time_command(command))
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print(f"{'model':<28} {'command':<28} {'median s':>9} {'min s':>7} {'ratio':>6}")
    for label, sparsity in (("ResNet-50-sized, dense", 0.0), ("ResNet-50-sized, 50% zeros", 0.5)):
        with tempfile.TemporaryDirectory() as folder:
            model = build_resnet50(Path(folder) / "resnet50.onnx", sparsity=sparsity)
            times = _time_interleaved(model, args.runs)
        base = statistics.median(times[BASELINE_NAME])
        for name, values in times.items():
            median = statistics.median(values)
            print(f"{label:<28} {name:<28} {median:9.3f} {min(values):7.3f} {median / base:6.2f}")
    print(f"\n(25.6 M parameters, {args.runs} interleaved runs per command, each a fresh process)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
