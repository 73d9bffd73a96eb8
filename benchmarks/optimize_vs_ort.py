"""Slimscope's optimizer against onnxruntime's own quantize_static, and what pruning buys, in one run.

    python benchmarks/optimize_vs_ort.py [--models demo,resnet18,mobilenetv2] [--runs 100] [--samples 128]

For each model (the demo network, and ResNet-18 / MobileNetV2 built by build_benchmark_models.py):
  A. int8 everywhere, Slimscope vs plain quantize_static with the same settings (QDQ, uint8 activations,
     int8 per-channel weights, minmax): latency ratio, agreement and output SQNR against fp32, wall time;
     and Slimscope's default int8 against fp32 (batch 1, one thread).
  B. Re-optimizing after a one-layer edit (calibration cached) against a fresh quantize_static.
  C. Channel pruning at 30 % and 50 % (and 50 % + int8): latency against the original, with agreement.
  D. Unstructured 50 % / 90 %: file and gzip size ratios (onnxruntime runs zeros like any weight).
Latencies are medians of interleaved runs (A, B, B, A ...) in one process, spinning off, so host drift
hits every model alike. Agreement and SQNR are against the fp32 model on held-out samples.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_benchmark_models import build  # noqa: E402

from slimscope.core.data import Dataset  # noqa: E402
from slimscope.core.evaluate import evaluate, measure_footprint, measure_latency  # noqa: E402
from slimscope.core.loading import load_model  # noqa: E402
from slimscope.core.optimize import OptimizeCache, iter_optimize  # noqa: E402
from slimscope.core.recipe import parse_recipe  # noqa: E402
from slimscope.core.tasks import run_sync  # noqa: E402
from slimscope.resources import DEMO_CALIBRATION, DEMO_DATA, DEMO_MODEL  # noqa: E402

INT8 = {"version": 1, "defaults": {"quantize": {}}}


def channel_recipe(sparsity: float, int8: bool) -> dict:
    defaults: dict = {"prune": {"structure": "channel", "sparsity": sparsity}}
    if int8:
        defaults["quantize"] = {}
    return {"version": 1, "defaults": defaults}


def unstructured_recipe(sparsity: float) -> dict:
    return {"version": 1, "defaults": {"prune": {"sparsity": sparsity, "scope": "global"}}}


def inputs_for(name: str, samples: int) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    """(model path, calibration samples, held-out samples, one latency input at deployment size)."""
    if name == "demo":
        held_out = np.load(DEMO_DATA)["x"][:samples]
        return DEMO_MODEL, np.load(DEMO_CALIBRATION)["x"][:samples], held_out, held_out[:1]
    # Trained on digits at 64x64 (agreement and calibration there); timed at 224x224, the size the
    # measured anchors for ResNet-18 and MobileNetV2 refer to.
    paths = build(Path(tempfile.gettempdir()) / "slimscope-benchmark-models")
    latency_input = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    return (
        paths[name],
        np.load(paths["calib"])["x"][:samples],
        np.load(paths["eval"])["x"][:samples],
        latency_input,
    )


def optimize(loaded, recipe: dict, calib: np.ndarray, cache: OptimizeCache | None = None):
    start = time.perf_counter()
    result = run_sync(iter_optimize(loaded, parse_recipe(recipe), calib, cache=cache))
    return result, time.perf_counter() - start


def ort_quantize_static(model: onnx.ModelProto, calib: np.ndarray) -> tuple[onnx.ModelProto, float]:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    input_name = model.graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{input_name: calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.items, None)

    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # quantize_static edits the proto it is given
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "ort_int8.onnx"
        start = time.perf_counter()
        quantize_static(copy, str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True, calibrate_method=CalibrationMethod.MinMax)  # fmt: skip
        elapsed = time.perf_counter() - start
        return onnx.load(str(out)), elapsed


def quality(original: onnx.ModelProto, optimized: onnx.ModelProto, data: np.ndarray) -> tuple[float, float]:
    dataset = Dataset(data, None, original.graph.input[0].name, "benchmark")
    report = evaluate(original, optimized, dataset, latency=False)
    return report.agreement, report.sqnr_db


def latencies(models: dict[str, onnx.ModelProto], sample: np.ndarray, runs: int) -> dict[str, float]:
    stats = measure_latency(models, threads=1, runs=runs, warmup=10, sample=sample)
    return {name: s.median_ms for name, s in stats.items()}


def bench_model(name: str, runs: int, samples: int) -> list[tuple]:
    path, calib, held_out, latency_input = inputs_for(name, samples)
    loaded = load_model(path)
    fp32 = loaded.model
    rows = []
    cache = OptimizeCache()
    slim, slim_s = optimize(loaded, INT8, calib, cache)
    ort_model, ort_s = ort_quantize_static(fp32, calib)
    first = loaded.model.graph.node[0].name or "layer0"
    edited = parse_recipe(INT8).with_layer(first, quantize=None).to_dict()
    _, edit_s = optimize(loaded, edited, calib, cache)
    half = {
        f"channel {int(s * 100)}%": optimize(loaded, channel_recipe(s, False), calib)[0].model
        for s in (0.3, 0.5)
    }
    half["channel 50% + int8"] = optimize(loaded, channel_recipe(0.5, True), calib)[0].model
    times = latencies(
        {"fp32": fp32, "slim int8": slim.model, "ort int8": ort_model, **half}, latency_input, runs
    )
    for label, model in (("slim int8", slim.model), ("ort int8", ort_model)):
        agreement, sqnr = quality(fp32, model, held_out)
        wall = slim_s if label == "slim int8" else ort_s
        rows.append(
            (name, label, times[label], times["fp32"] / times[label], agreement, sqnr, f"{wall:.2f} s")
        )
    rows.append((name, "slim/ort latency", times["slim int8"] / times["ort int8"], None, None, None, ""))
    rows.append(
        (
            name,
            "one-layer edit (cached)",
            None,
            None,
            None,
            None,
            f"{edit_s:.2f} s = {edit_s / ort_s:.2f}x ort",
        )
    )
    for label, model in half.items():
        agreement, sqnr = quality(fp32, model, held_out)
        rows.append((name, label, times[label], times["fp32"] / times[label], agreement, sqnr, ""))
    base = measure_footprint(fp32)
    for sparsity in (0.5, 0.9):
        pruned = measure_footprint(optimize(loaded, unstructured_recipe(sparsity), calib)[0].model)
        size = f"file {pruned.size_bytes / base.size_bytes:.2f}x, gzip {pruned.gzip_bytes / base.gzip_bytes:.2f}x"
        rows.append((name, f"unstructured {int(sparsity * 100)}%", None, None, None, None, size))
    return rows


def show(value, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="demo,resnet18,mobilenetv2")
    parser.add_argument("--runs", type=int, default=100, help="timed runs per model (interleaved)")
    parser.add_argument("--samples", type=int, default=128, help="calibration samples, and as many held out")
    args = parser.parse_args()
    print(
        f"{'model':<12} {'variant':<24} {'ms (1 thr)':>10} {'speedup':>8} {'agree':>7} {'SQNR dB':>8}  other"
    )
    for name in args.models.split(","):
        for row in bench_model(name, args.runs, args.samples):
            model, label, ms, speed, agree, sqnr, other = row
            print(f"{model:<12} {label:<24} {show(ms, '10.3f')} {show(speed, '8.2f')} {show(agree, '7.3f')} "
                  f"{show(sqnr, '8.1f')}  {other}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
