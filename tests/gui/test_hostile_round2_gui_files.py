"""The window's writers follow the command line's rules (issue 13, items 2-4): Recipe → Save and File →
Export never write over the open model or the data the window reads, and never replace a special file."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from slimscope.resources import DEMO_CALIBRATION, DEMO_DATA, DEMO_MODEL

JOB_TIMEOUT = 30_000


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def opened(window, open_and_wait, qtbot, tmp_path):
    """A copy of the demo model open, with copies of its data chosen, its first comparison finished."""
    open_and_wait(window, Path(shutil.copy(DEMO_MODEL, tmp_path / "net.onnx")))
    window.session.set_evaluation_data(Path(shutil.copy(DEMO_DATA, tmp_path / "eval.npz")))
    window.session.set_calibration_data(Path(shutil.copy(DEMO_CALIBRATION, tmp_path / "calib.npz")))
    qtbot.waitUntil(lambda: window.session.result_is_current, timeout=JOB_TIMEOUT)
    return window


def test_save_recipe_and_export_never_go_over_what_the_window_reads(opened, tmp_path, error_calls):
    from slimscope.gui.recipe_files import export_optimized, save_recipe_as

    before = {path.name: digest(path) for path in tmp_path.iterdir() if path.is_file()}
    (tmp_path / "link-to-model.onnx").symlink_to("net.onnx")
    save_recipe_as(opened, tmp_path / "link-to-model.onnx")
    save_recipe_as(opened, tmp_path / "calib.npz")
    export_optimized(opened, tmp_path / "eval.npz")
    fifo = tmp_path / "fifo.onnx"
    os.mkfifo(fifo)
    export_optimized(opened, fifo)
    messages = [str(error) for error in error_calls]
    assert messages == [
        f"'{tmp_path / 'link-to-model.onnx'}' would overwrite '{tmp_path / 'net.onnx'}', which this command "
        "reads (the open model); choose another file name.",
        f"'{tmp_path / 'calib.npz'}' would overwrite '{tmp_path / 'calib.npz'}', which this command reads (the "
        "calibration data); choose another file name.",
        f"'{tmp_path / 'eval.npz'}' would overwrite '{tmp_path / 'eval.npz'}', which this command reads (the "
        "evaluation data); choose another file name.",
        f"Cannot write '{fifo}': it is a pipe (FIFO), and Slimscope writes only regular files; choose a file "
        "name.",
    ]
    assert {name: digest(tmp_path / name) for name in before} == before
    assert os.path.islink(tmp_path / "link-to-model.onnx") and not (tmp_path / "fifo.report.json").exists()
