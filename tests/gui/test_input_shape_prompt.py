"""A TorchScript file records no input shape: the window asks for one and opens the file with it; a wrong
shape asks again; cancelling leaves the open model as it was, with no error dialog."""

import pytest
import torch
from PySide6.QtCore import QThreadPool
from PySide6.QtWidgets import QApplication, QInputDialog, QWidget

from slimscope.core.errors import InputShapeError
from slimscope.gui import input_shape_prompt, main_window
from slimscope.gui.input_shape_prompt import ask_input_shapes, parse_shape_lines
from slimscope.resources import DEMO_MODEL

OPEN_TIMEOUT = 120_000  # conversion runs in a child process that imports torch
INPUT_SHAPE = (1, 3, 8, 8)


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.fixture(scope="module")
def traced_path(tmp_path_factory):
    """A traced TorchScript file: tracing ran on a 1x3x8x8 input, but the file does not keep that shape."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("torchscript") / "tiny.pt"
    torch.jit.save(torch.jit.trace(TinyNet().eval(), torch.zeros(INPUT_SHAPE)), path)
    return path


@pytest.fixture(autouse=True)
def jobs_stopped_before_close(qtbot):
    """Stop the window's jobs before pytest-qt closes and deletes it (see test_data_dialog.py)."""

    def stop(_anchor: QWidget) -> None:
        for widget in QApplication.topLevelWidgets():
            if isinstance(widget, main_window.MainWindow):
                widget.opener.cancel()
                widget.live.cancel()
        qtbot.waitUntil(lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=OPEN_TIMEOUT)

    anchor = QWidget()
    qtbot.addWidget(anchor, before_close_func=stop)
    yield anchor  # pytest-qt keeps only a weak reference


@pytest.fixture
def trusted(monkeypatch):
    monkeypatch.setattr(main_window, "ask_to_trust", lambda parent, path: True)


def answer_shapes(monkeypatch, answers):
    """Replace the prompt: it returns `answers` in turn and records what it was asked."""
    asked = []
    remaining = iter(answers)

    def ask(parent, path, reason, previous=None):
        asked.append((path, reason, previous))
        return next(remaining)

    monkeypatch.setattr(input_shape_prompt, "ask_input_shapes", ask)
    return asked


@pytest.mark.parametrize(
    ("text", "shapes"),
    [
        ("1,3,224,224", [(1, 3, 224, 224)]),
        (" 1x3x8x8 \n\n1, 10\n", [(1, 3, 8, 8), (1, 10)]),
        ("7", [(7,)]),
    ],
)
def test_shape_text_is_read(text, shapes):
    assert parse_shape_lines(text) == shapes


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "Give the input shape"),
        ("1,0,8,8", "positive whole sizes"),
        ("1,3,a,8", "positive whole sizes"),
        ("1,-3,8,8", "positive whole sizes"),
        ("1,2,3,4,5,6,7", "has 7 dimensions"),
    ],
)
def test_bad_shape_text_is_refused(text, message):
    with pytest.raises(InputShapeError, match=message):
        parse_shape_lines(text)


def test_the_prompt_asks_again_until_the_shape_is_valid(monkeypatch, tmp_path):
    replies = iter([("1,0,8", True), ("1,3,8,8", True)])
    labels = []

    def dialog(parent, title, label, text):
        labels.append((label, text))
        return next(replies)

    monkeypatch.setattr(QInputDialog, "getMultiLineText", dialog)
    shapes = ask_input_shapes(None, tmp_path / "m.pt", "It does not record its input shape.", [(1, 3, 9, 9)])
    assert shapes == [INPUT_SHAPE]
    assert labels[0][1] == "1,3,9,9"  # the shape tried last is offered again
    assert "It does not record its input shape." in labels[0][0]
    assert "'1,0,8' is not a shape" in labels[1][0] and labels[1][1] == "1,0,8"
    monkeypatch.setattr(QInputDialog, "getMultiLineText", lambda *args: ("1,3,8,8", False))
    assert ask_input_shapes(None, tmp_path / "m.pt", "") is None  # Cancel


@pytest.mark.slow  # over 5 s: CI's second stage
def test_torchscript_opens_with_the_shape_the_user_gives(
    window, qtbot, traced_path, trusted, monkeypatch, error_calls
):
    asked = answer_shapes(monkeypatch, [[(1, 3, 9, 9)], [INPUT_SHAPE]])  # a wrong shape first
    window.open_model(traced_path)
    qtbot.waitUntil(lambda: window.session.report is not None, timeout=OPEN_TIMEOUT)
    loaded = window.session.loaded
    assert loaded.source == traced_path and loaded.format == "torchscript"
    assert list(loaded.input_shapes.values()) == [INPUT_SHAPE]
    assert window.windowTitle().startswith("tiny.pt")
    assert len(asked) == 2
    assert asked[0][0] == traced_path and asked[0][2] is None
    assert "does not record its input shape" in asked[0][1]
    assert asked[1][2] == [(1, 3, 9, 9)] and "does not run on an input of shape 1x3x9x9" in asked[1][1]
    assert error_calls == []


def test_cancelling_the_prompt_keeps_the_open_model(
    window, open_and_wait, traced_path, trusted, monkeypatch, error_calls
):
    open_and_wait(window, DEMO_MODEL)
    report, title = window.session.report, window.windowTitle()
    asked = answer_shapes(monkeypatch, [None])
    open_and_wait(window, traced_path, timeout=OPEN_TIMEOUT)
    assert len(asked) == 1
    assert window.session.report is report and window.windowTitle() == title
    assert not window.opener.running
    assert error_calls == []
