"""Recipe → Retrain… on the demo model with the real analysis process: a quick run fills the curves, the
side-by-side table and the comparison panel's retrained line, and its export loads in onnxruntime; Cancel
stops a run leaving a checkpoint that Resume finishes; a bad training path reaches the error funnel and
leaves the dialog usable; a schedule edit is one undoable recipe edit."""

import json

import numpy as np
import onnxruntime as ort
import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from slimscope.core.errors import SlimscopeError
from slimscope.core.recipe import PruneSpec
from slimscope.core.recipe_presets import preset_recipe
from slimscope.core.train.finetune import TrainingEvent
from slimscope.core.train.train_spec import QatSettings, TrainSpec
from slimscope.gui.panels.training_curves import block_starts, epoch_positions
from slimscope.gui.recipe_files import report_path
from slimscope.gui.retrain_dialog import CHECKPOINT_GLOB, RetrainDialog
from slimscope.gui.train_spec_form import plan_text
from slimscope.resources import DEMO_MODEL, DEMO_TRAINING

RUN_TIMEOUT = 120_000
# Steps 1, one final epoch of 10 batches of 16 (one running-loss point), validation on 2 % of the training
# data (80 samples), no QAT: a run of a few seconds on a quiet machine.
QUICK = {"steps": 1, "final_epochs": 1, "max_batches_per_epoch": 10, "batch_size": 16, "val_fraction": 2,
         "qat.epochs": 0}  # fmt: skip


def open_dialog(window, open_and_wait) -> RetrainDialog:
    """The dialog on the demo model, the recipe pruning 50 % (ranked globally) without quantizing."""
    action = window.actions_by_key["retrain"]
    assert not action.isEnabled()  # no model yet
    open_and_wait(window, DEMO_MODEL)
    assert action.isEnabled()
    recipe = window.session.recipe.with_defaults(prune=PruneSpec(sparsity=0.5, scope="global"), quantize=None)
    window.push_recipe(recipe, "Prune only")
    action.trigger()
    dialog = window.findChild(RetrainDialog)
    assert dialog is not None and dialog.isVisible()
    assert dialog.train_field.path() == DEMO_TRAINING  # the demo's training data, pre-filled
    return dialog


def set_fields(dialog: RetrainDialog, values: dict) -> None:
    """Through the form's widgets, as a user would: one recipe edit each."""
    for path, value in values.items():
        dialog.form.widget(path).setValue(value)


@pytest.mark.slow  # over 10 s: CI's second stage
def test_a_quick_run_fills_curves_and_table_and_exports(qtbot, window, open_and_wait, error_calls, tmp_path):
    dialog = open_dialog(window, open_and_wait)
    set_fields(dialog, QUICK)
    spec = window.session.recipe.training
    assert (spec.steps, spec.final_epochs, spec.max_batches_per_epoch, spec.qat.epochs) == (1, 1, 10, 0)
    assert (spec.batch_size, spec.val_fraction) == (16, 0.02)
    assert dialog.plan.text().startswith("Prunes ") and "50 % unstructured, global" in dialog.plan.text()
    assert not dialog.export_button.isEnabled()
    with qtbot.waitSignal(window.analysis.finetune_finished, timeout=RUN_TIMEOUT):
        dialog.start_button.click()
        assert dialog.running and dialog.cancel_button.isEnabled() and not dialog.start_button.isEnabled()
        assert not dialog.form.isEnabled()  # the schedule of a running run does not change
    qtbot.waitUntil(lambda: not dialog.running)
    result = dialog.result
    assert result is not None and error_calls == []
    # Curves: the running loss, the epoch's loss and accuracy, the two baselines, the step marker.
    curves = dialog.curves
    assert len(curves.running_loss.getData()[0]) >= 1
    xs, ys = curves.accuracy.getData()
    assert len(xs) == 1 and abs(ys[0] - 100 * curves.events[-1].val_accuracy) < 1e-9
    assert list(curves.dense.getData()[1]) == [100 * result.accuracy["dense"]] * 2
    assert list(curves.post_training.getData()[1]) == [100 * result.accuracy["post_training"]] * 2
    assert curves.step_lines[0][0].isVisible() and curves.step_lines[0][0].value() == 0
    # The table: three accuracies side by side, sizes and times.
    table = dialog.results
    for column in ("dense", "post_training", "retrained"):
        assert table.cell("accuracy", column) == f"{result.accuracy[column]:.2%}"
        assert table.cell("size", column).endswith("B")
    assert table.cell("time", "retrained").endswith("s")
    assert "validation data" in table.caption.text()
    # The comparison panel shows it beside the optimized numbers, labelled; a recipe edit removes it.
    assert window.session.retrained is result
    line = window.comparison.retrained
    assert not line.isHidden() and line.text().startswith("Retrained (validation data):")
    # Export: a file onnxruntime runs, with its report beside it; the source is never written over.
    assert dialog.export_button.isEnabled()
    path = dialog.export(tmp_path / "digits.retrained.onnx")
    assert path is not None and error_calls == []
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    sample = np.load(DEMO_TRAINING)["x"][:1].astype(np.float32)[:, None] / 255.0
    assert session.run(None, {session.get_inputs()[0].name: sample})[0].shape[-1] == 10
    assert json.loads(report_path(path).read_text())["accuracy"] == result.accuracy
    assert dialog.export(DEMO_MODEL) is None and len(error_calls) == 1  # refused, through the funnel
    set_fields(dialog, {"steps": 2})
    assert window.session.retrained is None and line.isHidden()


@pytest.mark.slow  # over 10 s: CI's second stage
def test_cancel_leaves_a_checkpoint_that_resume_finishes(qtbot, window, open_and_wait, error_calls, tmp_path):
    dialog = open_dialog(window, open_and_wait)
    set_fields(dialog, {**QUICK, "max_batches_per_epoch": 20})  # cancelled at batch 10, resumed
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    dialog.checkpoint_field.set_path(folder)
    assert not dialog.resume_button.isEnabled()  # nothing to resume from yet
    dialog.start()
    qtbot.waitUntil(lambda: len(dialog.curves.events) > 0, timeout=RUN_TIMEOUT)  # training under way
    dialog.cancel_button.click()
    assert not dialog.running and not window.analysis.running
    assert dialog.status.text().startswith("Stopped") and dialog.result is None
    assert list(folder.glob(CHECKPOINT_GLOB))
    assert dialog.resume_button.isEnabled() and dialog.start_button.isEnabled()
    with qtbot.waitSignal(window.analysis.finetune_finished, timeout=RUN_TIMEOUT) as finished:
        dialog.resume_button.click()
    assert finished.args[0].resumed and dialog.result is finished.args[0]
    assert "Resumed" in dialog.results.notes.text()
    assert error_calls == []


def test_a_bad_training_path_goes_to_the_error_funnel(qtbot, window, open_and_wait, error_calls, tmp_path):
    dialog = open_dialog(window, open_and_wait)
    missing = tmp_path / "missing.npz"
    dialog.train_field.set_path(missing)
    assert dialog.start()
    qtbot.waitUntil(lambda: len(error_calls) == 1, timeout=RUN_TIMEOUT)
    assert isinstance(error_calls[0], SlimscopeError) and "missing.npz" in str(error_calls[0])
    qtbot.waitUntil(lambda: not dialog.running)
    assert dialog.status.text() == "Retraining failed." and dialog.start_button.isEnabled()
    dialog.train_field.set_path(None)
    assert not dialog.start_button.isEnabled() and not dialog.start()


def test_schedule_edits_are_undoable_recipe_edits(window, open_and_wait):
    dialog = open_dialog(window, open_and_wait)
    before = window.session.recipe
    steps = dialog.form.widget("steps")
    assert steps.value() == before.training.steps == TrainSpec().steps
    depth = window.undo_stack.count()
    steps.setValue(7)
    assert window.session.recipe.training.steps == 7 and window.undo_stack.count() == depth + 1
    assert "7 cubic steps" in dialog.plan.text()
    window.actions_by_key["undo"].trigger()
    assert window.session.recipe == before and steps.value() == TrainSpec().steps
    window.actions_by_key["redo"].trigger()
    assert steps.value() == 7
    dialog.form.widget("augment.flip").setChecked(True)
    assert window.session.recipe.training.augment.flip and window.undo_stack.undoText() == (
        "Retraining Random flip: on"
    )


def test_a_dropped_folder_fills_the_field(window, tmp_path):
    dialog = RetrainDialog(window)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(tmp_path))])
    event = QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)  # fmt: skip
    dialog.val_field.dropEvent(event)
    assert dialog.val_field.path() == tmp_path


def test_plan_text_and_epoch_axis(demo_report):
    recipe = preset_recipe("sparse-50", [layer.name for layer in demo_report.layers])  # the demo's start
    text, retrains = plan_text(recipe, demo_report.layers)
    assert retrains and "int8 weights → QAT 2 epochs" in text and "4 cubic steps" in text
    nothing = recipe.with_defaults(prune=None).with_training(TrainSpec(qat=QatSettings(epochs=0)))
    assert plan_text(nothing, demo_report.layers)[1] is False

    def event(step, epoch, accuracy=None, seconds=0.0):
        return TrainingEvent("prune", step, 2, epoch, 0.5, 1.0, accuracy, 0.01, seconds)

    events = [event(1, 0), event(1, 0), event(1, 1, 0.9), event(2, 0), event(2, 1, 0.95)]
    xs = epoch_positions(events)
    assert xs == [1 / 3, 2 / 3, 1.0, 1.5, 2.0]
    assert block_starts(events, xs, 0.0) == [
        (0.0, "step 1 · 50 % of target"),
        (1.0, "step 2 · 50 % of target"),
    ]
