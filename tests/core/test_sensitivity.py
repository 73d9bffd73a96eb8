"""Per-layer sensitivity on the demo model: an outlier layer is found, results stream, closing cancels and
leaves no worker behind, the cache makes a repeat instant, parallel equals sequential, and the CLI."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import multiprocessing
import time

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from slimscope.core.cli import main
from slimscope.core.data import PreprocessSpec, load_dataset
from slimscope.core.errors import RecipeError
from slimscope.core.executor import LocalExecutor
from slimscope.core.loading import load_model
from slimscope.core.sensitivity import SensitivityCache, SensitivityReport, iter_sensitivity
from slimscope.core.tasks import Progress, run_sync
from slimscope.resources import DEMO_CALIBRATION, DEMO_DATA, DEMO_MODEL

BLOCK = "/blocks/blocks.4"
OUTLIER_LAYER = f"{BLOCK}/pointwise/pointwise.0/Conv"
PRODUCER = f"{BLOCK}/depthwise/depthwise.0/Conv"


@pytest.fixture(scope="module")
def demo():
    loaded = load_model(DEMO_MODEL)
    data = load_dataset(DEMO_DATA, PreprocessSpec.from_dict(None))
    calib = load_dataset(DEMO_CALIBRATION, PreprocessSpec.from_dict(None))
    return loaded, data, calib


def _initializer(model: onnx.ModelProto, node_name: str, slot: int) -> onnx.TensorProto:
    node = next(n for n in model.graph.node if n.name == node_name)
    return next(t for t in model.graph.initializer if t.name == node.input[slot])


def _scale(tensor: onnx.TensorProto, edit) -> None:
    values = numpy_helper.to_array(tensor).copy()
    edit(values)
    tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))


def with_outliers(loaded):
    """A copy whose OUTLIER_LAYER has four input columns of weights ×100 (the columns whose weights are
    largest relative to their row's maximum, so that they dominate each channel's quantization range).
    The depthwise conv feeding those columns is scaled by 1/100 through a ReLU (which commutes with a
    positive scale), so the float copy still computes what the original does and stays a fair reference."""
    model = onnx.ModelProto()
    model.CopyFrom(loaded.model)
    weight = _initializer(model, OUTLIER_LAYER, 1)
    w = np.abs(numpy_helper.to_array(weight)[:, :, 0, 0])
    columns = list(np.argsort(np.median(w / w.max(axis=1, keepdims=True), axis=0))[-4:])

    def up(values):
        values[:, columns] *= 100

    def down(values):
        values[columns] /= 100

    _scale(weight, up)
    _scale(_initializer(model, PRODUCER, 1), down)
    _scale(_initializer(model, PRODUCER, 2), down)
    return dataclasses.replace(loaded, model=model)


def sweep(task) -> tuple[SensitivityReport, list[Progress]]:
    seen: list[Progress] = []
    report = run_sync(task, seen.append)
    return report, seen


def test_outlier_layer_is_measured_most_sensitive_and_results_stream(demo):
    loaded, data, calib = demo
    copy = with_outliers(loaded)
    report, seen = sweep(iter_sensitivity(copy, data, "int8,int4", calibration=calib, max_samples=256))
    assert report.complete and report.metric == "accuracy"
    assert len(report.rows) == report.probes == 17 * 2
    assert report.most_sensitive("int4").layer == OUTLIER_LAYER
    assert report.most_sensitive("int4").drop > 0.3  # the other weights of each channel round to zero
    # int8: the outlier channels are also tiny activations (the 1/100 that keeps the float model intact),
    # which both the layer and its producer quantize; those two stand out, every other layer is far better.
    int8 = [row for row in report.rows if row.setting_key == "int8"]
    assert {row.layer for row in int8[:2]} == {OUTLIER_LAYER, PRODUCER}
    assert all(row.sqnr_db > int8[1].sqnr_db + 10 for row in int8[2:])
    # The same probe on the original model is harmless: the outliers make the difference.
    clean = run_sync(iter_sensitivity(loaded, data, "int4", calibration=calib, max_samples=64,
                                      layers=[OUTLIER_LAYER]))  # fmt: skip
    assert clean.rows[0].sqnr_db > report.most_sensitive("int4").sqnr_db + 15
    # Streamed: many partial reports, growing one result at a time, sorted by drop.
    partials = [p.partial for p in seen if p.partial is not None]
    assert len(partials) > 10
    counts = [len(p.rows) for p in partials]
    assert counts == sorted(counts) and counts[0] < counts[-1]
    drops = [row.drop for row in report.rows]
    assert drops == sorted(drops, reverse=True)
    text = json.dumps(report.to_dict(), allow_nan=False)
    assert json.loads(text)["rows"][0]["layer"] == OUTLIER_LAYER


def test_the_cache_makes_a_repeat_sweep_instant_and_identical(demo):
    loaded, data, calib = demo
    cache = SensitivityCache()
    started = time.perf_counter()
    first = run_sync(iter_sensitivity(loaded, data, "sparse50,int8", calibration=calib, max_samples=128,
                                      cache=cache))  # fmt: skip
    first_s = time.perf_counter() - started
    hits = cache.hits
    started = time.perf_counter()
    second = run_sync(iter_sensitivity(loaded, data, "sparse50,int8", calibration=calib, max_samples=128,
                                       cache=cache))  # fmt: skip
    second_s = time.perf_counter() - started
    assert second.rows == first.rows
    assert cache.hits - hits >= len(first.rows)  # every probe came from the cache
    assert second_s < min(0.5, first_s / 5), (first_s, second_s)
    # A different setting is a different key: only it is computed.
    third = run_sync(
        iter_sensitivity(loaded, data, "sparse80", calibration=calib, max_samples=128, cache=cache)
    )
    assert {row.setting_key for row in third.rows} == {"sparse80"}


@pytest.mark.slow  # over 10 s: CI's second stage
def test_parallel_workers_give_the_sequential_result(demo):
    loaded, data, calib = demo
    options = {"calibration": calib, "max_samples": 128, "refine_budget_s": math.inf}
    settings = "int8,sparse80,channels30"
    earlier = set(multiprocessing.active_children())  # children other tests left running are not ours
    sequential = run_sync(iter_sensitivity(loaded, data, settings, **options))
    with LocalExecutor(workers=2) as executor:
        parallel = run_sync(iter_sensitivity(loaded, data, settings, executor=executor, **options))
    assert parallel.rows == sequential.rows
    assert any(row.samples == 128 for row in sequential.rows)  # the refine pass ran in both
    assert not set(multiprocessing.active_children()) - earlier


def test_closing_the_sweep_stops_its_workers_promptly(demo):
    loaded, data, calib = demo
    earlier = set(multiprocessing.active_children())  # children other tests left running are not ours
    executor = LocalExecutor(workers=2)
    task = iter_sensitivity(loaded, data, calibration=calib, executor=executor, max_samples=128)
    results = 0
    for progress in task:
        if progress.partial is not None and progress.partial.rows:
            results += 1
            if results == 2:
                break
    assert set(multiprocessing.active_children()) - earlier  # the workers are busy with more probes
    started = time.perf_counter()
    task.close()
    assert time.perf_counter() - started < 5
    # Terminated at once; the pool's own thread may reap one a moment later than our join returns.
    deadline = time.monotonic() + 3
    while set(multiprocessing.active_children()) - earlier and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not set(multiprocessing.active_children()) - earlier
    # The executor starts fresh workers for the next sweep.
    again = run_sync(iter_sensitivity(loaded, data, "sparse50", executor=executor, max_samples=64,
                                      layers=["/stem/stem.0/Conv"]))  # fmt: skip
    assert len(again.rows) == 1
    executor.close()
    assert not multiprocessing.active_children()


def test_unknown_settings_are_refused_in_one_sentence(demo):
    loaded, data, _ = demo
    with pytest.raises(RecipeError, match="Unknown sensitivity setting 'int3'"):
        run_sync(iter_sensitivity(loaded, data, "int8,int3"))


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.slow  # over 5 s: CI's second stage
def test_cli_prints_a_table_sorted_by_drop_and_json():
    base = ["sensitivity", str(DEMO_MODEL), "--data", str(DEMO_DATA), "--calib", str(DEMO_CALIBRATION)]
    base += ["--settings", "sparse80,int8", "--samples", "64"]
    code, out, _ = run_cli(base)
    assert code == 0
    lines = out.splitlines()
    assert "accuracy drop" in lines[0] and lines[1].split()[:3] == ["layer", "setting", "drop"]
    drops = [float(line.split()[-3]) for line in lines[2:36]]
    assert len(drops) == 34 and drops == sorted(drops, reverse=True) and drops[0] > 0
    code, out, _ = run_cli([*base, "--json"])
    assert code == 0
    report = json.loads(out)
    assert report["complete"] and len(report["rows"]) == 34
    assert report["rows"][0]["drop"] == max(row["drop"] for row in report["rows"])
    code, out, err = run_cli([*base[:-4], "--settings", "int3"])
    assert code == 2 and out == "" and err.count("\n") == 1 and "int3" in err
