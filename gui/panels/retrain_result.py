"""`RetrainResultTable`: the dense model, the recipe applied without retraining, and the retrained model,
side by side — validation accuracy, file size and time — with core's notes below.

Accuracies are core's: top-1 in onnxruntime on the *validation* data of the run (not the evaluation data
of the comparison panel), so the table says so. The baseline fills the first two columns as soon as it
arrives; the result fills the rest.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHeaderView, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from slimscope.core.inspection_table import human_bytes
from slimscope.core.train.finetune import FinetuneBaseline, FinetuneResult

COLUMNS = ("dense", "post_training", "retrained")
COLUMN_TITLES = ("Dense", "Post-training", "Retrained")
COLUMN_TOOLTIPS = (
    "The model as opened",
    "The recipe applied without retraining (what the comparison panel evaluates)",
    "Pruned gradually with fine-tuning, then the recipe applied (and QAT when it quantizes)",
)
ROWS = ("accuracy", "size", "time", "simulated")
ROW_TITLES = ("validation accuracy", "file size", "time", "QAT simulated")
ROW_TOOLTIPS = (
    "Top-1 accuracy in onnxruntime on the validation data of this run",
    "The ONNX file's size",
    "Post-training: applying the recipe; retrained: pruning steps, fine-tuning, QAT and applying the recipe",
    "Accuracy of the QAT model with quantization simulated in PyTorch; the retrained column is the real "
    "quantized model in onnxruntime",
)
CAPTION = "Accuracies on the validation data of this run (not the comparison's evaluation data)."


def duration(seconds: float) -> str:
    """ "0.8 s", "41 s", "3 min 12 s"."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def baseline_cells(baseline: FinetuneBaseline) -> dict[tuple[str, str], str]:
    return {
        ("accuracy", "dense"): f"{baseline.dense_accuracy:.2%}",
        ("accuracy", "post_training"): f"{baseline.post_training_accuracy:.2%}",
        ("time", "dense"): "—",
        ("time", "post_training"): duration(baseline.post_training_seconds),
    }


def result_cells(result: FinetuneResult, dense_bytes: int | None) -> dict[tuple[str, str], str]:
    """The texts of every cell the result fills; `dense_bytes`: the open model's size."""
    cells = {("accuracy", column): f"{result.accuracy[column]:.2%}" for column in COLUMNS}
    # ByteSize is the length SerializeToString would have, without making the bytes.
    cells[("size", "post_training")] = human_bytes(result.post_training.ByteSize())
    cells[("size", "retrained")] = human_bytes(result.model.ByteSize())
    if dense_bytes is not None:
        cells[("size", "dense")] = human_bytes(dense_bytes)
    cells[("time", "dense")] = "—"
    cells[("time", "post_training")] = duration(result.seconds["post_training"])
    cells[("time", "retrained")] = duration(result.seconds["retraining"])
    if result.simulated_accuracy is not None:
        cells[("simulated", "retrained")] = f"{result.simulated_accuracy:.2%}"
    return cells


class RetrainResultTable(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.caption = QLabel(CAPTION, wordWrap=True)
        self.table = QTableWidget(len(ROWS), len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMN_TITLES))
        self.table.setVerticalHeaderLabels(list(ROW_TITLES))
        for index, tip in enumerate(COLUMN_TOOLTIPS):
            self.table.horizontalHeaderItem(index).setToolTip(tip)
        for index, tip in enumerate(ROW_TOOLTIPS):
            self.table.verticalHeaderItem(index).setToolTip(tip)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setWordWrap(False)
        for row in range(len(ROWS)):
            for column in range(len(COLUMNS)):
                item = QTableWidgetItem("")
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, column, item)
        self.notes = QLabel(wordWrap=True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.caption)
        layout.addWidget(self.table)
        layout.addWidget(self.notes)
        self.clear()

    def cell(self, row: str, column: str) -> str:
        return self.table.item(ROWS.index(row), COLUMNS.index(column)).text()

    def clear(self) -> None:
        for row in range(len(ROWS)):
            for column in range(len(COLUMNS)):
                self.table.item(row, column).setText("")
        self.table.setRowHidden(ROWS.index("simulated"), True)
        self.notes.clear()
        self._fit_height()

    def show_baseline(self, baseline: FinetuneBaseline, dense_bytes: int | None) -> None:
        cells = baseline_cells(baseline)
        if dense_bytes is not None:
            cells[("size", "dense")] = human_bytes(dense_bytes)
        self._fill(cells)

    def show_result(self, result: FinetuneResult, dense_bytes: int | None) -> None:
        self._fill(result_cells(result, dense_bytes))
        self.table.setRowHidden(ROWS.index("simulated"), result.simulated_accuracy is None)
        notes = list(result.notes)
        if result.resumed:
            notes.insert(0, "Resumed from a checkpoint; the time counts the earlier run.")
        self.notes.setText("\n".join(f"• {note}" for note in notes))
        self._fit_height()

    def _fill(self, cells: dict[tuple[str, str], str]) -> None:
        for (row, column), text in cells.items():
            self.table.item(ROWS.index(row), COLUMNS.index(column)).setText(text)

    def _fit_height(self) -> None:
        """As tall as its rows: the table never scrolls and leaves the rest of the room to the curves."""
        height = self.table.horizontalHeader().height() + 2 * self.table.frameWidth()
        for row in range(len(ROWS)):
            if not self.table.isRowHidden(row):
                height += self.table.rowHeight(row)
        self.table.setFixedHeight(height)
