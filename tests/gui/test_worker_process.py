"""The window's worker process: closing during an optimization ends it cleanly, and a crash in it is an
error message after which the next edit, or the next file, works again."""

import os
import signal
from pathlib import Path

import pytest
from PySide6.QtCore import QThreadPool

from slimscope.core.errors import WorkerCrashError
from slimscope.core.isolation import activity_for
from slimscope.resources import DEMO_MODEL

JOB_TIMEOUT = 60_000


def test_closing_during_an_optimization_ends_the_worker_and_its_threads(
    window, open_and_wait, qtbot, error_calls
):
    open_and_wait(window, DEMO_MODEL)
    window.live.run_now()
    qtbot.waitUntil(lambda: window.live.runner.running, timeout=5_000)
    process = window.worker_process._process
    assert process is not None and process.is_alive()
    window.close()  # mid-job
    qtbot.waitUntil(lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=10_000)
    assert not process.is_alive() and not window.worker_process.alive
    assert error_calls == []


@pytest.mark.slow  # over 5 s: CI's second stage
def test_a_crashed_worker_is_an_error_and_the_next_edit_starts_a_new_one(
    window, open_and_wait, qtbot, error_calls
):
    open_and_wait(window, DEMO_MODEL)
    session = window.session
    qtbot.waitUntil(lambda: session.result_is_current, timeout=JOB_TIMEOUT)
    first = window.worker_process._process
    window.live.run_now()
    qtbot.waitUntil(lambda: window.live.runner.running, timeout=5_000)
    os.kill(first.pid, signal.SIGKILL)  # what a segfault in a native library looks like from outside
    qtbot.waitUntil(lambda: len(error_calls) == 1, timeout=JOB_TIMEOUT)
    assert isinstance(error_calls[0], WorkerCrashError)
    assert "killed (SIGKILL) while optimizing and evaluating this model" in str(error_calls[0])
    window.settings_panel.defaults_mode.setChecked(True)
    window.settings_panel.sparsity_spin.setValue(0.3)  # the next edit
    qtbot.waitUntil(lambda: session.result_is_current, timeout=JOB_TIMEOUT)
    assert window.worker_process._process is not first and window.worker_process.alive
    assert len(error_calls) == 1


@pytest.mark.slow  # over 5 s: CI's second stage
def test_a_file_whose_reading_segfaults_is_one_error_and_the_window_keeps_working(
    window, open_and_wait, qtbot, error_calls, monkeypatch, tmp_path
):
    process = window.worker_process
    real_run = process.run

    def run(job, *args, **options):  # the open job of this one file segfaults, as on a hostile file
        if job == "open" and Path(args[0]).name == "crashes.onnx":
            return real_run("process_jobs:crash", *args, activity=activity_for("open", args))
        return real_run(job, *args, **options)

    monkeypatch.setattr(process, "run", run)
    hostile = tmp_path / "crashes.onnx"
    hostile.write_bytes(DEMO_MODEL.read_bytes())
    open_and_wait(window, DEMO_MODEL)
    session = window.session
    qtbot.waitUntil(lambda: session.result_is_current, timeout=JOB_TIMEOUT)

    open_and_wait(window, hostile)
    qtbot.wait(200)  # any second dialog would arrive now
    assert len(error_calls) == 1 and isinstance(error_calls[0], WorkerCrashError)
    assert "(SIGSEGV: segmentation fault) while reading this model" in str(error_calls[0])
    assert window.model_path == DEMO_MODEL and window.layer_table.model.rowCount() == 17  # still shown

    window.settings_panel.defaults_mode.setChecked(True)
    window.settings_panel.sparsity_spin.setValue(0.3)  # an edit: the model goes to a new worker
    qtbot.waitUntil(lambda: session.result_is_current, timeout=JOB_TIMEOUT)
    open_and_wait(window, DEMO_MODEL)  # and a second open works
    assert window.model_path == DEMO_MODEL and window.layer_table.model.rowCount() == 17
    assert len(error_calls) == 1
