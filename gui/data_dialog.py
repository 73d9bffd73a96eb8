"""`DataDialog` (Data → Choose Evaluation Data…): the evaluation and calibration data and their preprocessing.

Every check is core's: `data_kind` for the paths, `PreprocessSpec.from_dict` for the preprocessing, and a
background read (core's reader, then `fit_to_model`) that both describes the data and proves it fits the
open model. A problem is shown in red inside the dialog, which then refuses OK. On OK the preprocessing
becomes an undoable recipe edit and the paths go to the Session. Tests drive it without `exec()`: set the
widgets, call `accept()`, then `apply_to(window)`. The preprocessing fields are `PreprocessForm`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from slimscope.core.comparison import COMPARISON_SAMPLES
from slimscope.core.data import Dataset, PreprocessSpec, data_kind, fit_to_model, iter_load_dataset
from slimscope.core.errors import DatasetError
from slimscope.core.session import Session
from slimscope.core.tasks import Task
from slimscope.gui import settings
from slimscope.gui.preprocess_form import PreprocessForm
from slimscope.gui.task_runner import TaskRunner
from slimscope.gui.theme import set_status_colour

if TYPE_CHECKING:
    from slimscope.gui.main_window import MainWindow

PREVIEW_LIMIT = 2000  # samples the description reads at most: a huge image folder is not read twice whole
DEBOUNCE_MS = 250
DATA_FILE_FILTER = "NumPy archives (*.npz);;All files (*)"


@dataclass(frozen=True)
class DataChoice:
    """What the dialog asks for, checked by core."""

    evaluation: Path
    calibration: Path | None  # None: calibrate on the evaluation data
    preprocess: PreprocessSpec


def describe(dataset: Dataset) -> str:
    """One line: how many samples, labelled or not, the sample shape, and what can be measured on it."""
    count = f"more than {PREVIEW_LIMIT}" if len(dataset) > PREVIEW_LIMIT else str(len(dataset))
    noun = "images" if dataset.layout is not None else "samples"
    shape = "×".join(str(d) for d in dataset.sample_shape)
    if dataset.y is None:
        text = f"{count} {noun}, unlabelled, shape {shape} → top-1 agreement and SQNR"
    else:
        classes = len(dataset.class_names) if dataset.class_names else len(np.unique(dataset.y))
        text = f"{count} {noun}, labelled, {classes} classes, shape {shape} → accuracy, agreement and SQNR"
    return " ".join([text, *dataset.notes])


def read_summary(
    path: Path, spec: PreprocessSpec, model: onnx.ModelProto, compared: int | None = None
) -> Task[str]:
    """Read (at most PREVIEW_LIMIT + 1 samples) with core, check the data fits `model`, describe it;
    `compared`: how many samples the live comparison evaluates, said when the data holds more."""
    dataset = yield from iter_load_dataset(path, spec, PREVIEW_LIMIT + 1)
    fit_to_model(dataset, model)
    text = describe(dataset)
    if compared is not None and len(dataset) > compared:
        text += f" The live comparison evaluates the first {compared}."
    return text


class DataPathField(QWidget):
    """A path line edit with File… (.npz) and Folder… (images) buttons."""

    changed = Signal()

    def __init__(self, placeholder: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.edit = QLineEdit(placeholderText=placeholder)
        self.file_button = QPushButton(
            "File…", toolTip="Choose a .npz file with an array 'x' (and labels 'y')"
        )
        self.folder_button = QPushButton(
            "Folder…",
            toolTip="Choose a folder of images: class sub-folders (labelled) or images only (unlabelled)",
        )
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for widget in (self.edit, self.file_button, self.folder_button):
            layout.addWidget(widget)
        self.edit.textChanged.connect(self.changed)
        self.file_button.clicked.connect(self._choose_file)
        self.folder_button.clicked.connect(self._choose_folder)

    def path(self) -> Path | None:
        text = self.edit.text().strip()
        return Path(text).expanduser() if text else None

    def set_path(self, path: Path | None) -> None:
        self.edit.setText("" if path is None else str(path))

    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Choose data", settings.last_data_folder(), DATA_FILE_FILTER
        )
        if path:
            settings.set_last_data_folder(Path(path).parent)
            self.set_path(Path(path))

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(
            self, "Choose a folder of images", settings.last_data_folder()
        )
        if folder:
            settings.set_last_data_folder(Path(folder).parent)
            self.set_path(Path(folder))


class DataPreview(QObject):
    """One path's description, read in the background; `key` says which (path, spec) it describes."""

    done = Signal()

    def __init__(self, label: QLabel, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.label = label
        self.runner = TaskRunner(self)
        self.key: tuple[Path | None, PreprocessSpec] | None = None
        self.error: str | None = None
        self.finished = True
        self.runner.progressed.connect(lambda _gen, progress: self._show(progress.message))
        self.runner.returned.connect(lambda _gen, text: self._finish(text, None))
        self.runner.failed.connect(lambda _gen, exc: self._finish(None, exc))

    def request(
        self,
        path: Path | None,
        spec: PreprocessSpec,
        model: onnx.ModelProto,
        empty: str,
        compared: int | None,
    ) -> None:
        """Describe `path` read with `spec` unless that is already described (or being read)."""
        if (path, spec) == self.key:
            return
        self.key, self.error, self.finished = (path, spec), None, False
        if path is None:
            self.runner.cancel()
            self._finish(empty, None)
            return
        self._show("Reading…")
        self.runner.start(read_summary(path, spec, model, compared))

    def forget(self, text: str = "") -> None:
        """Stop reading and describe nothing (the fields are invalid)."""
        self.runner.cancel()
        self.key, self.error, self.finished = None, None, True
        self._show(text)

    def _finish(self, text: str | None, exc: BaseException | None) -> None:
        self.finished = True
        if exc is not None:
            self.error = str(exc) if isinstance(exc, DatasetError) else f"{type(exc).__name__}: {exc}"
            self._show(self.error, error=True)
        else:
            self._show(text or "")
        self.done.emit()

    def _show(self, text: str, *, error: bool = False) -> None:
        self.label.setText(text)
        set_status_colour(self.label, "error" if error else None)


class DataDialog(QDialog):
    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent, windowTitle="Choose Evaluation Data")
        if session.loaded is None or session.recipe is None:
            raise RuntimeError("The data dialog needs an open model.")
        self.session = session
        self.choice: DataChoice | None = None  # set by a successful accept()
        self._accept_pending = False  # OK was pressed while the data was still being read
        self.evaluation = DataPathField("a .npz file or a folder of images")
        self.calibration = DataPathField("empty: calibrate on the evaluation data")
        self.evaluation_info, self.calibration_info = QLabel(wordWrap=True), QLabel(wordWrap=True)
        self.previews = (DataPreview(self.evaluation_info, self), DataPreview(self.calibration_info, self))
        self.preprocess = PreprocessForm()
        self.error_label = QLabel(wordWrap=True)
        set_status_colour(self.error_label, "error")
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.timer = QTimer(self, singleShot=True, interval=DEBOUNCE_MS)
        self._lay_out()
        self._fill(session)
        self._connect()
        self.refresh()

    @property
    def ok_button(self) -> QPushButton:
        return self.buttons.button(QDialogButtonBox.StandardButton.Ok)

    def _lay_out(self) -> None:
        data_form = QFormLayout()
        data_form.addRow("Evaluation data", self.evaluation)
        data_form.addRow("", self.evaluation_info)
        data_form.addRow("Calibration data", self.calibration)
        data_form.addRow("", self.calibration_info)
        layout = QVBoxLayout(self)
        layout.addLayout(data_form)
        layout.addWidget(self.preprocess)
        layout.addWidget(self.error_label)
        layout.addWidget(self.buttons)
        self.resize(640, self.sizeHint().height())

    def _fill(self, session: Session) -> None:
        """The Session's data and the recipe's preprocessing (the demo model comes with its data)."""
        self.evaluation.set_path(session.evaluation_data)
        self.calibration.set_path(session.calibration_data)
        assert session.recipe is not None
        self.preprocess.set_spec(PreprocessSpec.from_dict(session.recipe.data.get("preprocess")))

    def _connect(self) -> None:
        for field in (self.evaluation, self.calibration):
            field.changed.connect(self._on_edited)
        self.preprocess.changed.connect(self._on_edited)
        self.timer.timeout.connect(self.refresh)
        for preview in self.previews:
            preview.done.connect(self._on_preview_done)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

    def values(self) -> DataChoice:
        """The dialog's choice; raises DatasetError (one sentence) for a missing path or bad field."""
        spec = PreprocessSpec.from_dict(self.preprocess.spec_data())
        evaluation, calibration = self.evaluation.path(), self.calibration.path()
        if evaluation is None:
            raise DatasetError("Choose the evaluation data: a .npz file or a folder of images.")
        for path in (evaluation, calibration):
            if path is not None:
                data_kind(path)  # raises for a missing path or a file that is not data
        return DataChoice(evaluation, calibration, spec)

    # ------------------------------------------------------------------ checking and accepting

    def _on_edited(self, *_args: object) -> None:
        self._accept_pending = False
        self.ok_button.setEnabled(True)
        self.timer.start()

    def refresh(self) -> DataChoice | None:
        """Check the fields now and (re)start the background reads; the choice, or None if invalid."""
        self.timer.stop()
        try:
            choice = self.values()
        except DatasetError as exc:
            self.error_label.setText(str(exc))
            for preview in self.previews:
                preview.forget()
            return None
        self.error_label.setText("")
        model = self.session.loaded.model  # type: ignore[union-attr]  # checked in __init__
        self.previews[0].request(choice.evaluation, choice.preprocess, model, "", COMPARISON_SAMPLES)
        calibration_empty = "Empty: quantization calibrates on the evaluation data."
        self.previews[1].request(choice.calibration, choice.preprocess, model, calibration_empty, None)
        return choice

    def accept(self) -> None:
        """Accept only data core read and fitted to the model; wait for reads still running."""
        choice = self.refresh()
        if choice is None:
            return
        if not all(preview.finished for preview in self.previews):
            self._accept_pending = True
            self.ok_button.setEnabled(False)
            self.error_label.setText("")
            return
        self._accept_pending = False
        self.ok_button.setEnabled(True)
        error = next((preview.error for preview in self.previews if preview.error), None)
        if error is not None:
            self.error_label.setText(error)
            return
        self.choice = choice
        super().accept()

    def _on_preview_done(self) -> None:
        if self._accept_pending and all(preview.finished for preview in self.previews):
            self.accept()

    def done(self, result: int) -> None:
        self.timer.stop()
        for preview in self.previews:
            preview.runner.cancel()
        super().done(result)

    def apply_to(self, window: MainWindow) -> None:
        """Put the accepted choice into the window: preprocessing as an undoable recipe edit, then the data."""
        choice = self.choice
        recipe = window.session.recipe
        if choice is None or recipe is None:
            return
        data = recipe.data
        data.pop("preprocess", None)
        if choice.preprocess.to_dict():
            data["preprocess"] = choice.preprocess.to_dict()
        new_recipe = recipe.with_data(data or None)
        if new_recipe != recipe:
            window.push_recipe(new_recipe, "Change preprocessing")
        window.session.set_evaluation_data(choice.evaluation)
        window.session.set_calibration_data(choice.calibration)


def choose_data(window: MainWindow) -> None:
    """Data → Choose Evaluation Data…: the dialog, applied when the user presses OK."""
    if window.session.loaded is None:
        return
    dialog = DataDialog(window.session, window)
    try:
        if dialog.exec() == QDialog.DialogCode.Accepted:
            dialog.apply_to(window)
    finally:
        dialog.deleteLater()
