"""The optimizer's child process: results, progress, cancel, errors and crashes cross the boundary."""

import pytest

from slimscope.core.comparison import iter_compare
from slimscope.core.errors import DatasetError, OptimizeError
from slimscope.core.loading import load_model
from slimscope.core.optimize import OptimizeCache
from slimscope.core.recipe import template_recipe
from slimscope.core.task_process import TaskProcess
from slimscope.core.tasks import run_sync
from slimscope.resources import DEMO_CALIBRATION, DEMO_DATA, DEMO_MODEL


@pytest.fixture(scope="module")
def process():
    worker = TaskProcess()
    yield worker
    worker.close()


def collect(task):
    seen = []
    result = run_sync(task, seen.append)
    return seen, result


def test_progress_streams_in_order_and_the_result_returns(process):
    seen, result = collect(process.run("process_jobs:count", 5))
    assert result == 5
    assert [p.partial for p in seen] == [0, 1, 2, 3, 4]
    assert [p.fraction for p in seen] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])


def test_a_cancelled_job_stops_and_the_next_job_gets_only_its_own_replies(process):
    task = process.run("process_jobs:count", 1000, 0.01)
    next(task), next(task)
    task.close()  # cancel: the child stops at its next yield
    seen, result = collect(process.run("process_jobs:count", 3))
    assert result == 3 and [p.partial for p in seen] == [0, 1, 2]


def test_errors_keep_their_type_and_sentence(process):
    with pytest.raises(DatasetError, match="no labels here"):
        run_sync(process.run("process_jobs:fail", "no labels here"))
    with pytest.raises(OptimizeError, match="this and that"):
        run_sync(process.run("process_jobs:fail_oddly"))
    assert run_sync(process.run("process_jobs:count", 1)) == 1  # the child survived both


def test_a_crash_in_the_child_is_an_error_and_the_next_job_gets_a_new_child():
    worker = TaskProcess()
    try:
        first = run_sync(worker.run("process_jobs:child_pid"))
        with pytest.raises(OptimizeError, match="stopped unexpectedly"):
            run_sync(worker.run("process_jobs:segfault"))
        second = run_sync(worker.run("process_jobs:child_pid"))
        assert second != first
    finally:
        worker.close()
    assert not worker.alive


def test_the_model_is_sent_once_and_again_after_a_change(process):
    loaded = load_model(DEMO_MODEL)
    loaded.model.graph.name = "first"
    process.set_model(loaded)
    assert run_sync(process.run("process_jobs:model_name")) == "first"
    process.set_model(None)
    assert run_sync(process.run("process_jobs:model_name")) is None


def test_compare_in_the_child_equals_compare_in_process(process):
    loaded = load_model(DEMO_MODEL)
    recipe = template_recipe([])
    direct = run_sync(iter_compare(loaded, recipe, DEMO_DATA, DEMO_CALIBRATION, cache=OptimizeCache()))
    process.set_model(loaded)
    partials = []
    remote = run_sync(process.run("compare", recipe, DEMO_DATA, DEMO_CALIBRATION), partials.append)
    assert remote.recipe == recipe
    assert remote.report.accuracy == direct.report.accuracy
    assert remote.report.size_bytes == direct.report.size_bytes
    assert remote.report.latency_ms is not None and len(remote.report.layers) == len(direct.report.layers)
    early = [p.partial for p in partials if type(p.partial).__name__ == "Comparison"]
    assert early and early[0].report.latency_ms is None  # headline numbers first, latency after
    assert remote.optimized.model.SerializeToString() == direct.optimized.model.SerializeToString()


def test_sensitivity_and_auto_jobs_run_in_the_child(process):
    loaded = load_model(DEMO_MODEL)
    process.set_model(loaded)
    partials = []
    report = run_sync(
        process.run("sensitivity", DEMO_DATA, DEMO_CALIBRATION, None, "int8", 128), partials.append
    )
    assert report.complete and len(report.rows) == 17
    assert any(getattr(p.partial, "complete", True) is False for p in partials)  # streamed
    result = run_sync(process.run("auto", DEMO_DATA, DEMO_CALIBRATION, None, 0.01, "latency", None, 200))
    assert result.drop <= 0.01 + 1e-9 and result.recipe.layers
