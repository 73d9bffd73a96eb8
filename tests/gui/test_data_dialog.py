"""Data → Choose Evaluation Data…: the dialog describes data with core's readers, refuses what core refuses
(shown inline), and on OK changes the Session's data and the recipe's preprocessing (undoably)."""

import numpy as np
import pytest
from PIL import Image
from PySide6.QtCore import QThreadPool
from PySide6.QtWidgets import QApplication, QDialog, QWidget

from slimscope.core.data import PreprocessSpec
from slimscope.gui.data_dialog import DataDialog
from slimscope.gui.main_window import MainWindow
from slimscope.resources import DEMO_CALIBRATION, DEMO_DATA, DEMO_MODEL

JOB_TIMEOUT = 60_000
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@pytest.fixture(autouse=True)
def jobs_stopped_before_close(qtbot):
    """Stop every background job before pytest-qt closes the window.

    pytest-qt closes and deleteLater()s registered widgets before fixtures tear down; a job still running
    then makes the window fixture's wait for threads spin the event loop, which deletes the window under
    it. Registered first (autouse), this runs before the window is closed."""

    def stop(_anchor: QWidget) -> None:
        for widget in QApplication.topLevelWidgets():
            if isinstance(widget, MainWindow):
                for dlg in widget.findChildren(DataDialog):
                    dlg.done(QDialog.DialogCode.Rejected)
                widget.opener.cancel()
                widget.live.cancel()
        qtbot.waitUntil(lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=JOB_TIMEOUT)

    anchor = QWidget()
    qtbot.addWidget(anchor, before_close_func=stop)
    yield anchor  # pytest-qt keeps only a weak reference


@pytest.fixture
def opened(window, open_and_wait):
    """The demo model open (its first comparison may still be running)."""
    open_and_wait(window, DEMO_MODEL)
    return window


@pytest.fixture
def dialog(opened):
    return DataDialog(opened.session, opened)  # a child of the window: closed with it


@pytest.fixture
def demo_arrays():
    with np.load(DEMO_DATA) as archive:
        return archive["x"], archive["y"]


def wait_described(qtbot, dlg):
    qtbot.waitUntil(lambda: all(p.finished and p.key is not None for p in dlg.previews), timeout=JOB_TIMEOUT)


def accept_and_wait(qtbot, dlg):
    dlg.accept()
    qtbot.waitUntil(lambda: not dlg._accept_pending, timeout=JOB_TIMEOUT)


def test_action_is_enabled_only_with_a_model(window, open_and_wait):
    action = window.actions_by_key["choose_data"]
    assert action.shortcut().toString() == "Ctrl+D"
    assert not action.isEnabled()
    open_and_wait(window, DEMO_MODEL)
    assert action.isEnabled()
    menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Data")
    assert menu.actions()[0] == action  # first in the Data menu (Input Size… follows it)


def test_opens_with_the_demo_data_and_describes_it(dialog, qtbot):
    assert dialog.evaluation.path() == DEMO_DATA
    assert dialog.calibration.path() == DEMO_CALIBRATION
    assert dialog.preprocess.preset.currentText() == "0–1"  # the default: scale 1/255, no mean/std
    wait_described(qtbot, dialog)
    assert dialog.evaluation_info.text().startswith("1000 samples, labelled, 10 classes, shape 1×28×28")
    assert "evaluates the first 300" in dialog.evaluation_info.text()
    assert dialog.calibration_info.text().startswith("256 samples, labelled, 10 classes, shape 1×28×28")
    assert dialog.error_label.text() == ""


def test_unlabelled_npz_becomes_the_evaluation_data_and_is_compared(opened, dialog, qtbot, tmp_path, demo_arrays,
                                                                    error_calls):  # fmt: skip
    path = tmp_path / "unlabelled.npz"
    np.savez(path, x=demo_arrays[0][:120])
    session = opened.session
    qtbot.waitUntil(lambda: session.result_is_current, timeout=JOB_TIMEOUT)
    assert session.result.report.accuracy is not None  # the demo data is labelled
    dialog.evaluation.edit.setText(str(path))
    dialog.calibration.edit.setText("")
    accept_and_wait(qtbot, dialog)
    assert dialog.result() == QDialog.DialogCode.Accepted
    assert dialog.evaluation_info.text().startswith(
        "120 samples, unlabelled, shape 1×28×28 → top-1 agreement"
    )
    assert "Empty" in dialog.calibration_info.text()
    undo_count = opened.undo_stack.count()
    dialog.apply_to(opened)
    assert session.evaluation_data == path
    assert session.calibration_data is None
    assert opened.undo_stack.count() == undo_count  # the preprocessing did not change: no recipe edit
    # A new comparison runs on the unlabelled data: agreement without accuracy.
    qtbot.waitUntil(
        lambda: session.result is not None and session.result.report.accuracy is None, timeout=JOB_TIMEOUT
    )
    assert session.result.report.agreement is not None
    assert error_calls == []


def test_preprocessing_goes_into_the_recipe_and_undo_restores_it(opened, dialog, qtbot):
    session = opened.session
    before = session.recipe
    dialog.preprocess.preset.setCurrentText("ImageNet (mean/std)")
    assert dialog.preprocess.mean_edit.text() == "0.485, 0.456, 0.406"
    dialog.preprocess.layout_combo.setCurrentText("NHWC")
    accept_and_wait(qtbot, dialog)
    assert dialog.result() == QDialog.DialogCode.Accepted
    # The demo's x is float model input: core says the preprocessing is not applied to it.
    assert "preprocessing was not applied" in dialog.evaluation_info.text()
    dialog.apply_to(opened)
    assert session.recipe.data == {"preprocess": {**IMAGENET, "layout": "NHWC"}}
    assert session.recipe.defaults == before.defaults and session.recipe.layers == before.layers
    assert opened.undo_stack.undoText() == "Change preprocessing"
    opened.actions_by_key["undo"].trigger()
    assert session.recipe == before
    assert session.recipe.data == {}
    opened.actions_by_key["redo"].trigger()
    assert PreprocessSpec.from_dict(session.recipe.data["preprocess"]).layout == "NHWC"
    # Opened again, the dialog shows the recipe's preprocessing.
    again = DataDialog(session, opened)
    assert again.preprocess.preset.currentText() == "ImageNet (mean/std)"
    assert again.preprocess.layout_combo.currentText() == "NHWC"
    again.done(QDialog.DialogCode.Rejected)


@pytest.mark.parametrize(
    ("field", "text", "message"),
    [
        ("evaluation", "/no/such/data.npz", "does not exist"),
        ("evaluation", "", "Choose the evaluation data"),
        ("calibration", "/no/such/calib", "does not exist"),
        ("mean", "0.5, abc", "Mean '0.5, abc' is not a list of numbers"),
        ("std", "0", "Preprocessing field 'std.0'"),
        ("resize", "1,2,3", "Resize '1,2,3' is not a size"),
        ("scale", "1/0", "Scale '1/0' is not a number"),
    ],
)
def test_bad_input_is_shown_inline_and_not_accepted(opened, dialog, qtbot, field, text, message):
    session = opened.session
    recipe = session.recipe
    form = dialog.preprocess
    edits = {
        "evaluation": dialog.evaluation.edit, "calibration": dialog.calibration.edit,
        "mean": form.mean_edit, "std": form.std_edit, "resize": form.resize_edit, "scale": form.scale_edit,
    }  # fmt: skip
    edits[field].setText(text)
    dialog.accept()
    assert message in dialog.error_label.text()
    assert not dialog._accept_pending
    assert dialog.result() != QDialog.DialogCode.Accepted and dialog.choice is None
    dialog.apply_to(opened)  # nothing was accepted: nothing changes
    assert session.evaluation_data == DEMO_DATA and session.recipe == recipe


def test_a_text_file_is_not_data(dialog, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    dialog.evaluation.edit.setText(str(path))
    dialog.accept()
    assert "is not data Slimscope reads" in dialog.error_label.text()
    assert dialog.result() != QDialog.DialogCode.Accepted


def test_data_that_does_not_fit_the_model_is_refused(dialog, qtbot, tmp_path, demo_arrays):
    path = tmp_path / "pixels.npz"
    x, y = demo_arrays
    np.savez(path, x=np.round(x[:50] * 255).astype(np.uint8), y=y[:50])  # uint8 images: preprocessed
    dialog.evaluation.edit.setText(str(path))
    dialog.preprocess.resize_edit.setText("20")  # 20x20 images for a 28x28 model
    accept_and_wait(qtbot, dialog)
    assert dialog.result() != QDialog.DialogCode.Accepted
    assert "20x20" in dialog.error_label.text() and "28x28" in dialog.error_label.text()
    assert dialog.error_label.text() == dialog.evaluation_info.text()
    dialog.preprocess.resize_edit.setText("")
    accept_and_wait(qtbot, dialog)
    assert dialog.result() == QDialog.DialogCode.Accepted
    assert dialog.evaluation_info.text().startswith("50 images, labelled, 10 classes, shape 1×28×28")


def _write_images(folder, count, value):
    folder.mkdir(parents=True)
    for index in range(count):
        Image.fromarray(np.full((28, 28), value + index, dtype=np.uint8)).save(folder / f"{index}.png")


def test_image_folders_labelled_and_not(dialog, qtbot, tmp_path):
    _write_images(tmp_path / "classes" / "cat", 3, 10)
    _write_images(tmp_path / "classes" / "dog", 2, 200)
    _write_images(tmp_path / "flat", 4, 50)
    dialog.evaluation.edit.setText(str(tmp_path / "classes"))
    dialog.calibration.edit.setText(str(tmp_path / "flat"))
    accept_and_wait(qtbot, dialog)
    assert dialog.result() == QDialog.DialogCode.Accepted
    assert dialog.evaluation_info.text().startswith("5 images, labelled, 2 classes, shape 1×28×28")
    assert dialog.calibration_info.text().startswith("4 images, unlabelled, shape 1×28×28")
    assert dialog.choice.calibration == tmp_path / "flat"
