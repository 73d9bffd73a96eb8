"""The error funnel: a Slimscope error shows its sentence; anything else a short note plus the traceback."""

from PySide6.QtWidgets import QMessageBox

from slimscope.core.errors import ModelLoadError
from slimscope.gui import errors


def shown_boxes(monkeypatch):
    boxes = []
    monkeypatch.setattr(QMessageBox, "exec", lambda self: boxes.append(self) or 0)
    return boxes


def test_slimscope_error_shows_its_sentence(qtbot, monkeypatch):
    boxes = shown_boxes(monkeypatch)
    errors.show_error(None, ModelLoadError("'x.onnx' is empty."))
    assert boxes[0].text() == "'x.onnx' is empty."
    assert boxes[0].detailedText() == ""


def test_unexpected_error_keeps_the_traceback(qtbot, monkeypatch):
    boxes = shown_boxes(monkeypatch)
    try:
        {}["missing"]
    except KeyError as exc:
        errors.show_error(None, exc)
    assert "KeyError" not in boxes[0].text() and "missing" not in boxes[0].text()  # no library words up front
    assert "unexpected problem" in boxes[0].text()
    assert "Traceback" in boxes[0].detailedText() and "missing" in boxes[0].detailedText()


def test_a_failed_comparison_does_not_leave_its_last_step_on_screen(qtbot, window, error_calls):
    window.comparison.status.setText("Preparing the model for quantization")
    window.live.failed.emit(ValueError("boom"))
    assert error_calls and isinstance(error_calls[0], ValueError)
    assert "failed" in window.comparison.status.text()
