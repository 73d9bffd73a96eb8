"""`ComparisonPanel`: original vs optimized — accuracy or agreement, SQNR, sizes, non-zero weights — with
the change, the report's warnings, and the running accuracy while an evaluation streams in."""

from __future__ import annotations

import math

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHeaderView, QLabel, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from slimscope.core.comparison import Comparison
from slimscope.core.evaluate import RunningMetrics
from slimscope.core.evaluate.quality_warnings import decibels_text, percent_text
from slimscope.core.evaluate.report import EvalReport
from slimscope.core.inspection_table import human_count
from slimscope.core.session import Session
from slimscope.core.train.finetune import FinetuneResult
from slimscope.gui.theme import set_status_colour

SQNR_TOOLTIP = "Signal-to-quantization-noise ratio of {}: higher is closer to the original"
ROWS = ("accuracy", "agreement", "sqnr_db", "latency_ms", "size_bytes", "gzip_bytes", "nonzero_params")
ROW_TITLES = {"accuracy": "top-1 accuracy", "agreement": "top-1 agreement", "sqnr_db": "output SQNR",
              "latency_ms": "latency", "size_bytes": "file size", "gzip_bytes": "gzip size",
              "nonzero_params": "non-zero weights"}  # fmt: skip
ROW_TOOLTIPS = {
    "accuracy": "Share of samples whose top class is the label (labelled data only)",
    "agreement": "Share of samples where the optimized model's top class equals the original's",
    "sqnr_db": SQNR_TOOLTIP.format("the outputs"),
    "latency_ms": "Median time of one batch-1 inference in onnxruntime on one CPU thread, both models timed "
    "interleaved; change is the speed-up",
    "size_bytes": "The ONNX file's size",
    "gzip_bytes": "The file's size after gzip: what zeroed (pruned) weights save on disk or over the air",
    "nonzero_params": "Weights that are not zero",
}
COLUMNS = ("original", "optimized", "change")
RETRAINED_TOOLTIP = (
    "Recipe → Retrain…: the recipe applied after pruning gradually with fine-tuning (and QAT), against the "
    "recipe applied without retraining. Measured on the retraining's validation data, not on the "
    "evaluation data of the table above"
)


percent = percent_text  # agreement and SQNR read as in the command line's summary
decibels = decibels_text
WARNING_SIGN = "⚠"


def kilobytes(value: int | None) -> str:
    return "…" if value is None else f"{value / 1000:.1f} kB"


def milliseconds(value: float) -> str:
    return f"{value:.3f} ms" if value < 1 else f"{value:.2f} ms"


def speed_change(speedup: float) -> str:
    if not math.isfinite(speedup):
        return ""
    return f"{speedup:.2f}× faster" if speedup >= 1 else f"{1 / speedup:.2f}× slower"


def ratio_change(original: float | None, optimized: float | None) -> str:
    return f"{optimized / original - 1:+.1%}" if original and optimized is not None else ""


def retrained_text(result: FinetuneResult) -> str:
    """ "Retrained (validation data): 98.70 % · post-training 96.10 % · 41 s of retraining"."""
    accuracy, seconds = result.accuracy, round(result.seconds["retraining"])
    return (
        f"Retrained (validation data): {accuracy['retrained']:.2%} · post-training "
        f"{accuracy['post_training']:.2%} · {seconds} s of retraining"
    )


def report_cells(report: EvalReport) -> dict[str, tuple[str, str, str]]:
    """The (original, optimized, change) texts of each row shown for `report`."""
    cells: dict[str, tuple[str, str, str]] = {}
    if report.accuracy is not None:
        before, after = report.accuracy["original"], report.accuracy["optimized"]
        cells["accuracy"] = (percent(before), percent(after), f"{100 * (after - before):+.1f} pts")
    if report.agreement is not None:
        cells["agreement"] = ("", percent(report.agreement), "")
    if report.sqnr_db is not None:
        cells["sqnr_db"] = ("", decibels(report.sqnr_db), "")
    if report.latency_ms:
        first = report.latency_ms[0]
        before, after = first.original.median_ms, first.optimized.median_ms
        cells["latency_ms"] = (milliseconds(before), milliseconds(after), speed_change(first.speedup))
    for key, show in (("size_bytes", kilobytes), ("gzip_bytes", kilobytes), ("nonzero_params", human_count)):
        values = getattr(report, key)
        before, after = values["original"], values["optimized"]
        cells[key] = (show(before), show(after), ratio_change(before, after))
    for key in report.flagged & cells.keys():  # past a threshold of quality_warnings.judge
        before, after, change = cells[key]
        cells[key] = (before, after, f"{WARNING_SIGN} {change}".rstrip())
    return cells


class ComparisonPanel(QWidget):
    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.status = QLabel("No comparison yet.")
        self.table = QTableWidget(len(ROWS), len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setVerticalHeaderLabels([ROW_TITLES[key] for key in ROWS])
        for row, key in enumerate(ROWS):
            self.table.verticalHeaderItem(row).setToolTip(ROW_TOOLTIPS[key])
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        # Numbers are never cut: every column as wide as its contents (the panel scrolls when narrower).
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setWordWrap(False)
        for row in range(len(ROWS)):
            for column in range(len(COLUMNS)):
                item = QTableWidgetItem("")
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, column, item)
        self.warnings = QLabel(wordWrap=True)
        set_status_colour(self.warnings, "warning")  # recoloured when the theme switches
        self.retrained = QLabel(wordWrap=True, toolTip=RETRAINED_TOOLTIP)
        layout = QVBoxLayout(self)
        layout.addWidget(self.status)
        layout.addWidget(self.table)
        layout.addWidget(self.retrained)
        layout.addWidget(self.warnings)
        session.result_changed.connect(self.show_result)
        session.recipe_changed.connect(self._on_recipe)
        session.retrained_changed.connect(self.show_retrained)
        self.show_result(session.result)
        self.show_retrained(session.retrained)

    def cell(self, key: str, column: str) -> str:
        return self.table.item(ROWS.index(key), COLUMNS.index(column)).text()

    def show_result(self, result: Comparison | None) -> None:
        cells = {} if result is None else report_cells(result.report)
        for row, key in enumerate(ROWS):
            for column, text in enumerate(cells.get(key, ("", "", ""))):
                self.table.item(row, column).setText(text)
        if result is None:
            self.status.setText("No comparison yet.")
            self.warnings.clear()
            return
        self._name_sqnr(result.report.sqnr_on)
        timed = "" if result.report.latency_ms else "; timing latency…"
        self.status.setText(f"Compared on {result.report.samples} samples{timed}")
        lines = [*result.optimized.warnings, *result.report.warnings]
        self.warnings.setText("\n".join(f"⚠ {line}" for line in lines))
        self.warnings.setToolTip("\n".join(result.optimized.notes))  # what optimizing did, in words

    def _name_sqnr(self, measured_on: str) -> None:
        """The SQNR row says what it measured: the outputs, or the logits before a final Softmax."""
        header = self.table.verticalHeaderItem(ROWS.index("sqnr_db"))
        header.setText(ROW_TITLES["sqnr_db"] if measured_on == "the outputs" else "logit SQNR")
        header.setToolTip(SQNR_TOOLTIP.format(measured_on))

    def show_retrained(self, result: FinetuneResult | None) -> None:
        """The retrained accuracy of the current recipe, when there is one (hidden otherwise)."""
        self.retrained.setText("" if result is None else retrained_text(result))
        self.retrained.setVisible(result is not None)

    def show_running(self, metrics: RunningMetrics) -> None:
        """A partial evaluation: the running accuracy or agreement so far."""
        row = ROWS.index("accuracy")
        if metrics.accuracy is not None:
            self.table.item(row, 0).setText(percent(metrics.accuracy["original"]))
            self.table.item(row, 1).setText(percent(metrics.accuracy["optimized"]))
        if metrics.agreement is not None:
            self.table.item(ROWS.index("agreement"), 1).setText(percent(metrics.agreement))
        self.status.setText(f"Evaluating… {metrics.samples}/{metrics.total} samples")

    def _on_recipe(self, _recipe: object) -> None:
        if self.session.result is not None and not self.session.result_is_current:
            self.status.setText("The recipe changed: comparing again…")
