"""`RetrainDialog` (Recipe → Retrain…): recover the accuracy the recipe costs by retraining, and watch it.

The work is core's `iter_finetune` (gradual pruning with fine-tuning, then quantization-aware training),
run by the window's `Analysis` in its child process: first the recipe applied without retraining (the
post-training baseline), then epoch after epoch, streamed into live curves, then the retrained model. The
schedule is the recipe's "training" section: each change of the form is one undoable recipe edit, and a
saved recipe carries it to `slimscope finetune`. With a checkpoint folder, a cancelled run resumes at the
epoch it reached (core refuses a checkpoint of another model, recipe or data). The result sits beside the
dense and post-training numbers, on the validation data, and is exported like File → Export.

The dialog is not modal; closing it stops its run (as the automatic recipe's does). Tests drive it without
`exec()`: set the fields, call `start()`, wait for `result`, call `export(path)`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QMimeData, Qt
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from slimscope.core.export import export_model, refuse_protected, write_json
from slimscope.core.tasks import Progress
from slimscope.core.train.checkpoints import checkpoint_path
from slimscope.core.train.finetune import FinetuneBaseline, FinetuneResult, TrainingEvent
from slimscope.core.train.train_spec import TrainSpec
from slimscope.gui import errors, recipe_files, settings
from slimscope.gui.analysis import FINETUNE
from slimscope.gui.data_dialog import DataPathField
from slimscope.gui.panels.retrain_result import RetrainResultTable
from slimscope.gui.panels.training_curves import TrainingCurves
from slimscope.gui.train_spec_form import TrainSpecForm, plan_text
from slimscope.resources import DEMO_MODEL, DEMO_TRAINING

if TYPE_CHECKING:
    from slimscope.gui.main_window import MainWindow

CHECKPOINT_GLOB = checkpoint_path(Path(), "*").name  # "slimscope-finetune-*.pt", as core names them


def has_checkpoint(folder: Path | None) -> bool:
    """True when `folder` holds a retraining checkpoint (of any run: core checks it is this run's)."""
    return folder is not None and folder.is_dir() and any(folder.glob(CHECKPOINT_GLOB))


def is_demo(source: Path) -> bool:
    try:
        return Path(source).resolve() == DEMO_MODEL.resolve()
    except OSError:
        return False


def dropped_path(mime: QMimeData) -> Path | None:
    """The first local file or folder in a drag's data."""
    paths = [Path(url.toLocalFile()) for url in mime.urls() if url.isLocalFile()]
    return paths[0] if paths else None


class DropPathField(DataPathField):
    """A data path field that also takes a file or folder dropped onto it."""

    def __init__(self, placeholder: str, parent: QWidget | None = None) -> None:
        super().__init__(placeholder, parent)
        self.hint = ""  # the field's tooltip, under the whole path (a long one is cut in the field)
        self.edit.setAcceptDrops(False)  # the field takes the drop: the path, not the URL's text
        self.setAcceptDrops(True)
        self.edit.textChanged.connect(self._show_tooltip)

    def set_hint(self, hint: str) -> None:
        self.hint = hint
        self._show_tooltip()

    def _show_tooltip(self, *_args: object) -> None:
        self.edit.setToolTip("\n".join(part for part in (self.edit.text(), self.hint) if part))

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if dropped_path(event.mimeData()) is not None:
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        path = dropped_path(event.mimeData())
        if path is not None:
            self.set_path(path)
            event.acceptProposedAction()


class CheckpointFolderField(DropPathField):
    """A folder only: where checkpoints are written and resumed from."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Blank: no checkpoints", parent)
        self.file_button.hide()
        self.folder_button.setToolTip("Choose the folder checkpoints are written to (one file per run)")

    def _choose_folder(self) -> None:
        start = str(self.path() or settings.checkpoint_folder() or settings.last_data_folder())
        folder = QFileDialog.getExistingDirectory(self, "Choose a checkpoint folder", start)
        if folder:
            self.set_path(Path(folder))


class RetrainDialog(QDialog):
    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.setWindowTitle("Retrain")
        self.main_window, self.session, self.analysis = window, window.session, window.analysis
        self.result: FinetuneResult | None = None
        self.run_recipe = None  # the recipe of the run shown
        self.dense_bytes: int | None = None
        self._retrainable = False
        self._running = False  # this dialog started the analysis' current job and has not seen it end
        self.train_field = DropPathField("Labelled: .npz with x and y, or a folder of class sub-folders")
        self.val_field = DropPathField("Blank: split off the training data (validation share)")
        self.checkpoint_field = CheckpointFolderField()
        self.form = TrainSpecForm()
        self.plan = QLabel(wordWrap=True, textInteractionFlags=Qt.TextInteractionFlag.TextSelectableByMouse)
        self.plan.setToolTip("What retraining to the current recipe does (the recipe's prune and quantize "
                             "settings, and the schedule below)")  # fmt: skip
        self.start_button = QPushButton("Start", toolTip="Retrain from the open model (a checkpoint "
                                        "folder keeps every epoch, so a stopped run can resume)")  # fmt: skip
        self.resume_button = QPushButton("Resume", toolTip="Continue the run whose checkpoint is in the "
                                         "checkpoint folder (same model, recipe and data)")  # fmt: skip
        self.cancel_button = QPushButton("Cancel", toolTip="Stop retraining (closing this window stops "
                                         "it too); with a checkpoint folder, Resume continues it")  # fmt: skip
        self.export_button = QPushButton("Export Retrained ONNX…")
        self.export_button.setToolTip("Write the retrained model and its report (.report.json beside it)")
        self.progress = QProgressBar(textVisible=True)
        self.status = QLabel(wordWrap=True)
        self.curves = TrainingCurves()
        self.results = RetrainResultTable()
        self._lay_out()
        self._connect()
        self.checkpoint_field.set_path(settings.checkpoint_folder())
        self.reset()
        self.resize(1280, 860)

    def _lay_out(self) -> None:
        data = QGroupBox("Data")
        data_form = QFormLayout(data)
        data_form.addRow("Training", self.train_field)
        data_form.addRow("Validation", self.val_field)
        data_form.addRow("Checkpoints", self.checkpoint_field)
        self.train_field.set_hint("Labelled training data (drop a file or folder here)")
        self.val_field.set_hint("Labelled validation data, never trained on; blank: the validation share of "
                                "the training data is held out")  # fmt: skip
        self.checkpoint_field.set_hint("A checkpoint is written here after every epoch; blank: none")
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 6, 0)
        left_layout.addWidget(data)
        left_layout.addWidget(self.form)
        scroll = QScrollArea(widgetResizable=True, frameShape=QScrollArea.Shape.NoFrame)
        scroll.setWidget(left)
        scroll.setMinimumWidth(470)
        run_row = QHBoxLayout()
        for button in (self.start_button, self.resume_button, self.cancel_button):
            run_row.addWidget(button)
        run_row.addWidget(self.progress, 1)
        right = QVBoxLayout()
        right.addWidget(self.plan)
        right.addLayout(run_row)
        right.addWidget(self.status)
        right.addWidget(self.curves, 1)
        right.addWidget(self.results)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.addButton(self.export_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.rejected.connect(self.reject)
        right.addWidget(buttons)
        columns = QHBoxLayout(self)
        columns.addWidget(scroll)
        columns.addLayout(right, 1)

    def _connect(self) -> None:
        self.start_button.clicked.connect(lambda: self.start())
        self.resume_button.clicked.connect(lambda: self.start(resume=True))
        self.cancel_button.clicked.connect(self.cancel)
        self.export_button.clicked.connect(lambda: self.export())
        for field in (self.train_field, self.val_field, self.checkpoint_field):
            field.changed.connect(self._sync_controls)
        self.form.edit_requested.connect(self._edit_training)
        self.analysis.progressed.connect(self._on_progress)
        self.analysis.training_progressed.connect(self._on_training)
        self.analysis.finetune_finished.connect(self._on_finished)
        self.analysis.running_changed.connect(self._on_running)
        self.analysis.failed.connect(self._on_failed)
        self.session.model_changed.connect(self.reset)
        self.session.recipe_changed.connect(self._show_recipe)

    @property
    def running(self) -> bool:
        return self.analysis.running and self.analysis.job == FINETUNE

    # ------------------------------------------------------------------ commands

    def start(self, resume: bool = False) -> bool:
        """Retrain with the fields and the recipe shown; `resume`: from the checkpoint folder. False when
        nothing started (no model, no training data, nothing to retrain)."""
        train, val, folder = self.train_field.path(), self.val_field.path(), self.checkpoint_field.path()
        if train is None or not self._retrainable or (resume and folder is None):
            return False
        if not self.analysis.run_finetune(train, val, folder, resume):
            return False
        settings.set_last_training_data(train)
        settings.set_last_validation_data(val)
        settings.set_checkpoint_folder(folder)
        self._running, self.result, self.run_recipe = True, None, self.analysis.finetune_recipe
        spec = self.run_recipe.training if self.run_recipe is not None else TrainSpec()
        self.curves.clear(spec)
        self.results.clear()
        self.progress.setRange(0, 0)
        self.status.setText("Resuming from the checkpoint…" if resume else "Starting…")
        self._sync_controls()
        return True

    def cancel(self) -> None:
        if self.running:
            self.analysis.cancel()

    def export(self, path: Path | None = None) -> Path | None:
        """Write the retrained model (checked, atomically, never over the source) and its report beside it;
        asked for a path when none is given, then offered to show its folder. The written path, or None."""
        result, loaded = self.result, self.session.loaded
        if result is None or loaded is None:
            return None
        asked = path is None
        if path is None:
            suggested = str(Path(settings.last_folder()) / f"{Path(loaded.source).stem}.retrained.onnx")
            chosen, _ = QFileDialog.getSaveFileName(self, "Export retrained ONNX", suggested,
                                                    recipe_files.ONNX_FILTER)  # fmt: skip
            if not chosen:
                return None
            path = Path(chosen)
            settings.set_last_folder(path.parent)
        protected = [loaded.source, *loaded.external_files]
        report = {"source": str(loaded.source), "output": str(path), **result.to_dict()}
        recipe = {} if self.run_recipe is None else self.run_recipe.to_dict()
        metadata = {
            "slimscope.recipe": json.dumps(recipe),
            "slimscope.finetune": json.dumps(result.to_dict()),
        }
        report_file = recipe_files.report_path(path)
        try:
            refuse_protected(report_file, [*protected, path])
            export_model(result.model, path, protected=protected, metadata=metadata)
            write_json(report, report_file)
        except Exception as exc:  # noqa: BLE001 - every error goes to the funnel
            errors.show_error(self.main_window, exc)
            return None
        self.status.setText(f"Exported {path.name} and {report_file.name}.")
        if asked:
            recipe_files.offer_to_show(self.main_window, path)
        return path

    def reset(self, *_args: object) -> None:
        """A new model: no run, no result; the demo's training data for the demo model."""
        self._running, self.result, self.run_recipe = False, None, None
        loaded = self.session.loaded
        self.dense_bytes = None if loaded is None else loaded.model.ByteSize()  # = len(SerializeToString())
        if loaded is not None and is_demo(loaded.source):
            self.train_field.set_path(DEMO_TRAINING)
            self.val_field.set_path(None)
        else:
            self.train_field.set_path(settings.last_training_data())
            self.val_field.set_path(settings.last_validation_data())
        self.curves.clear()
        self.results.clear()
        self.progress.reset()
        self.status.setText("" if loaded is not None else "Open a model first.")
        self._show_recipe()

    def reject(self) -> None:
        """Closing the dialog stops its run (a checkpoint folder lets it resume)."""
        self.cancel()
        super().reject()

    # ------------------------------------------------------------------ the recipe

    def _show_recipe(self, *_args: object) -> None:
        recipe, report = self.session.recipe, self.session.report
        if recipe is None or report is None:
            self.plan.setText("")
            self._retrainable = False
        else:
            self.form.show_spec(recipe.training)
            text, self._retrainable = plan_text(recipe, report.layers)
            self.plan.setText(text)
        self._sync_controls()

    def _edit_training(self, spec: TrainSpec, text: str) -> None:
        recipe = self.session.recipe
        if recipe is not None:
            self.main_window.push_recipe(recipe.with_training(spec), f"Retraining {text}")

    def _sync_controls(self, *_args: object) -> None:
        running = self.running
        idle = self.session.loaded is not None and not running and self._retrainable
        self.start_button.setEnabled(idle and self.train_field.path() is not None)
        resumable = (
            idle and self.train_field.path() is not None and has_checkpoint(self.checkpoint_field.path())
        )
        self.resume_button.setEnabled(resumable)
        self.cancel_button.setEnabled(running)
        self.export_button.setEnabled(self.result is not None and not running)
        for widget in (self.form, self.train_field, self.val_field, self.checkpoint_field):
            widget.setEnabled(not running and self.session.recipe is not None)

    # ------------------------------------------------------------------ the run (main thread)

    def _on_progress(self, job: str, progress: Progress) -> None:
        if job != FINETUNE or not self._running:
            return
        if progress.fraction is None:
            self.progress.setRange(0, 0)
        else:
            self.progress.setRange(0, 1000)
            self.progress.setValue(round(progress.fraction * 1000))
        self.status.setText(progress.message)

    def _on_training(self, part: FinetuneBaseline | TrainingEvent) -> None:
        if not self._running:
            return
        if isinstance(part, FinetuneBaseline):
            self.curves.set_baseline(part)
            self.results.show_baseline(part, self.dense_bytes)
        else:
            self.curves.add_event(part)

    def _on_finished(self, result: FinetuneResult) -> None:
        if not self._running:
            return
        self.result = result
        self.curves.redraw()
        self.results.show_result(result, self.dense_bytes)
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        accuracy = result.accuracy
        self.status.setText(
            f"Retrained: {accuracy['retrained']:.2%} on the validation data (post-training "
            f"{accuracy['post_training']:.2%}, dense {accuracy['dense']:.2%})."
        )
        self._sync_controls()

    def _on_running(self, _running: bool) -> None:
        if self._running and not self.running:  # ended: finished, cancelled, replaced or failed
            self._running = False
            if self.result is None:
                self.progress.setRange(0, 1)
                self.progress.setValue(0)
                resumable = has_checkpoint(self.checkpoint_field.path())
                self.status.setText(
                    "Stopped." + (" Resume continues from the checkpoint." if resumable else "")
                )
        self._sync_controls()

    def _on_failed(self, job: str, _exc: object) -> None:
        if job == FINETUNE and self._running:
            self._running = False  # the error itself goes to the window's error funnel
            self.status.setText("Retraining failed.")
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            self._sync_controls()


def open_retrain_dialog(window: MainWindow) -> RetrainDialog:
    """Show the window's retraining dialog (one per window, kept with its last run)."""
    dialog = window.findChild(RetrainDialog)
    if dialog is None:
        dialog = RetrainDialog(window)
    dialog.show()
    dialog.raise_()
    dialog.activateWindow()
    return dialog
