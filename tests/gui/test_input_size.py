"""Data → Input Size…: offered only for a model that leaves its input size open; the size given fills the
MACs column and the Model tab, is remembered for that model file only, and without one the evaluation
data's sample shape is used once a comparison has run."""

import numpy as np
import onnx
import pytest
from free_size_model import CHANNELS, CLASSES, conv_macs, free_size_model
from PySide6.QtCore import Qt

from slimscope.core.errors import InputShapeError
from slimscope.core.inspection_table import human_count
from slimscope.gui import input_size, settings
from slimscope.gui.input_size import read_input_size
from slimscope.gui.panels.layer_table import MACS_COLUMN
from slimscope.resources import DEMO_MODEL

JOB_TIMEOUT = 60_000


@pytest.fixture
def free_paths(tmp_path):
    """Two different files of the same free-size network."""
    paths = (tmp_path / "free_a.onnx", tmp_path / "free_b.onnx")
    for seed, path in enumerate(paths):
        onnx.save(free_size_model(seed), path)
    return paths


@pytest.fixture
def answers(monkeypatch):
    """Replace the question: answer each call with the next queued value; record the guesses offered."""
    queued, guesses = [], []

    def ask(parent, model_name, declared, guess):
        guesses.append((model_name, declared, guess))
        return queued.pop(0)

    monkeypatch.setattr(input_size, "ask_input_size", ask)
    return queued, guesses


def macs_texts(window) -> list[str]:
    model = window.layer_table.model
    return [model.index(row, MACS_COLUMN).data() for row in range(model.rowCount())]


def test_the_action_is_offered_only_when_the_size_is_open(qtbot, open_and_wait, window, free_paths):
    action = window.actions_by_key["input_size"]
    assert not action.isEnabled()  # no model
    open_and_wait(window, DEMO_MODEL)
    assert not action.isEnabled()  # fixed 1x28x28 digits
    assert "?" not in macs_texts(window)
    open_and_wait(window, free_paths[0])
    assert action.isEnabled()
    assert macs_texts(window) == ["?", "?"]
    data_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Data")
    assert action in data_menu.actions()


def test_a_given_size_fills_the_macs_and_is_remembered_per_model(
    qtbot, open_and_wait, window, free_paths, answers, error_calls
):
    queued, guesses = answers
    window.overview.quantity.setCurrentText("MACs")
    open_and_wait(window, free_paths[0])
    assert "2 layers unknown" in window.overview.summary.text()
    queued.append({"x": (1, 3, 48, 192)})
    window.actions_by_key["input_size"].trigger()
    assert guesses == [("free_a.onnx", {"x": ("N", 3, "H", "W")}, {"x": (1, 3, 224, 224)})]
    assert macs_texts(window) == [human_count(conv_macs(48, 192)), human_count(CHANNELS * CLASSES)]
    assert window.session.report.macs == conv_macs(48, 192) + CHANNELS * CLASSES
    assert window.report is window.session.report  # the histogram reads the same report
    total = human_count(conv_macs(48, 192) + CHANNELS * CLASSES)
    assert f"{total} in all" in window.overview.summary.text()  # the Model tab's chart too
    assert "1×3×48×192" in window.statusBar().currentMessage()
    header = window.layer_table.model.headerData(
        MACS_COLUMN, Qt.Orientation.Horizontal, Qt.ItemDataRole.ToolTipRole
    )
    assert header.endswith("Counted for x 1×3×48×192")
    assert settings.input_size(free_paths[0]) == [(1, 3, 48, 192)]
    assert window.session.recipe is not None and window.undo_stack.count() == 0  # not a recipe edit

    open_and_wait(window, free_paths[1])  # another file: its own (no) size
    assert macs_texts(window) == ["?", "?"]
    open_and_wait(window, free_paths[0])  # back: the size given before
    assert macs_texts(window)[0] == human_count(conv_macs(48, 192))

    queued.append({})  # cleared: no size again (no comparison has run)
    window.actions_by_key["input_size"].trigger()
    assert guesses[-1][2] == {"x": (1, 3, 48, 192)}  # offered the size in use
    assert macs_texts(window) == ["?", "?"]
    assert settings.input_size(free_paths[0]) is None
    assert error_calls == []


def test_without_a_given_size_the_evaluation_datas_shape_is_used(
    qtbot, open_and_wait, window, free_paths, tmp_path, error_calls
):
    data = tmp_path / "crops.npz"
    np.savez(data, x=np.random.default_rng(1).random((16, 3, 40, 100), dtype=np.float32))
    open_and_wait(window, free_paths[0])
    window.session.set_evaluation_data(data)
    qtbot.waitUntil(lambda: window.session.result_is_current, timeout=JOB_TIMEOUT)
    qtbot.waitUntil(lambda: window.session.report.macs is not None, timeout=JOB_TIMEOUT)
    assert window.session.report.shape_used == {"x": (1, 3, 40, 100)}
    assert macs_texts(window)[0] == human_count(conv_macs(40, 100))
    assert error_calls == []


def test_typed_sizes_are_checked_against_the_model():
    declared = {"x": ("N", 3, "H", "W")}
    assert read_input_size("1, 3, 48, 192", declared) == {"x": (1, 3, 48, 192)}
    assert read_input_size("2x3x32x32\n", declared) == {"x": (2, 3, 32, 32)}
    assert read_input_size("  \n", declared) == {}
    with pytest.raises(InputShapeError, match="size 3 on axis 1"):
        read_input_size("1,1,48,192", declared)
    with pytest.raises(InputShapeError, match="4 dimensions"):
        read_input_size("1,3,48", declared)


def test_the_size_question_asks_again_until_the_size_fits(monkeypatch):
    from PySide6.QtWidgets import QInputDialog

    replies = iter([("1,3,48", True), ("1,3,48,192", True)])
    labels = []

    def dialog(parent, title, label, text):
        labels.append((title, label, text))
        return next(replies)

    monkeypatch.setattr(QInputDialog, "getMultiLineText", dialog)
    declared = {"x": (None, 3, None, None)}
    shapes = input_size.ask_input_size(None, "cls.onnx", declared, {"x": (1, 3, 224, 224)})
    assert shapes == {"x": (1, 3, 48, 192)}
    assert labels[0][0] == "Input size" and labels[0][2] == "1,3,224,224"  # the guess is offered
    assert "leaves its input size open" in labels[0][1]
    assert labels[1][1] != labels[0][1] and labels[1][2] == "1,3,48"  # the problem is said, the text kept
    monkeypatch.setattr(QInputDialog, "getMultiLineText", lambda *args: ("", False))
    assert input_size.ask_input_size(None, "cls.onnx", declared, {"x": (1, 3, 224, 224)}) is None  # Cancel
