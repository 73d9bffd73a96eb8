"""The sensitivity sweep on Ray gives what it gives on local worker processes. A private Ray instance on
127.0.0.1 with two CPUs is started for the module and shut down after it; skipped when ray is missing."""

from __future__ import annotations

import math
import socket
import time

import pytest

from slimscope.core.data import PreprocessSpec, load_dataset
from slimscope.core.executor import ExecutorError, LocalExecutor, RayExecutor
from slimscope.core.loading import load_model
from slimscope.core.sensitivity import iter_sensitivity
from slimscope.core.tasks import run_sync
from slimscope.resources import DEMO_CALIBRATION, DEMO_DATA, DEMO_MODEL

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'slimscope[ray]')")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_cluster_is_one_sentence_and_quick():
    if ray.is_initialized():
        pytest.skip("ray is already initialized in this process")
    started = time.perf_counter()
    with pytest.raises(ExecutorError, match=r"Cannot reach the Ray cluster at '127\.0\.0\.1:\d+'"):
        RayExecutor(f"127.0.0.1:{_free_port()}")
    assert time.perf_counter() - started < 10
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def local_ray():
    ray.init(
        address="local",
        include_dashboard=False,
        num_cpus=2,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        logging_level="ERROR",
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.slow  # over 10 s: CI's second stage
def test_sweep_on_ray_equals_the_local_process_pool(local_ray):
    loaded = load_model(DEMO_MODEL)
    data = load_dataset(DEMO_DATA, PreprocessSpec.from_dict(None))
    calib = load_dataset(DEMO_CALIBRATION, PreprocessSpec.from_dict(None))
    options = {"calibration": calib, "max_samples": 96, "refine_budget_s": math.inf}
    settings = "int8,sparse80"
    with LocalExecutor(workers=2) as local:
        expected = run_sync(iter_sensitivity(loaded, data, settings, executor=local, **options))
    with RayExecutor("auto") as executor:  # uses the instance this process started
        assert executor.workers == 2
        report = run_sync(iter_sensitivity(loaded, data, settings, executor=executor, **options))
    assert report.rows == expected.rows
    assert any(row.samples == 96 for row in report.rows)  # quick and refine passes both ran on Ray


@pytest.mark.slow  # over 10 s: CI's second stage
def test_the_window_job_runs_the_sweep_on_a_ray_address():
    """The worker-process job the Sensitivity tab runs, pointed at a local Ray instance: same rows."""
    from slimscope.core.loading import load_model
    from slimscope.core.task_process import TaskProcess
    from slimscope.core.tasks import run_sync
    from slimscope.resources import DEMO_CALIBRATION, DEMO_DATA, DEMO_MODEL

    process = TaskProcess()
    try:
        process.set_model(load_model(DEMO_MODEL))
        local = run_sync(process.run("sensitivity", DEMO_DATA, DEMO_CALIBRATION, None, "sparse80", 64))
        process.set_model(load_model(DEMO_MODEL))  # a fresh model object: a fresh cache in the child
        remote = run_sync(
            process.run("sensitivity", DEMO_DATA, DEMO_CALIBRATION, None, "sparse80", 64, "local")
        )
    finally:
        process.close()
    assert [(r.layer, r.drop, r.sqnr_db) for r in remote.rows] == [
        (r.layer, r.drop, r.sqnr_db) for r in local.rows
    ]
