"""`SensitivityPanel`: how much each layer alone costs when quantized or pruned one way, most sensitive first.

The sweep is core's (`core/sensitivity.py`), run by `Analysis` in its own child process; its partial
reports stream in and the chart fills as they come (redrawn at most ~20 times a second). The drop is in
accuracy points when the data is labelled, else in top-1 agreement with the float model; a model that is
not a classifier has no drop and is shown by output SQNR instead. The layer table's "sensitivity" column
shows the setting chosen here (`rows_shown`).
"""

from __future__ import annotations

import math

from PySide6.QtCore import QTimer, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from slimscope.core.sensitivity import DEFAULT_MAX_SAMPLES, SensitivityReport, SensitivityRow
from slimscope.core.sensitivity_probe import DEFAULT_SETTINGS
from slimscope.core.session import Session
from slimscope.core.tasks import Progress
from slimscope.gui import settings
from slimscope.gui.analysis import SENSITIVITY, Analysis
from slimscope.gui.panels.layer_bar_chart import LayerBarChart
from slimscope.gui.panels.layer_error_panel import BAD_DB, ERROR_COLORS, GOOD_DB, IDENTICAL_DB, NOT_MEASURED

CHECKED_BY_DEFAULT = ("int8", "int4")
BAD_DROP_PT = 3.0  # the colour scale: green at no drop, amber at half this, red from this many points on
REDRAW_MS = 50  # partial reports can arrive hundreds of times a second; the chart follows at most 20/s
METRIC_WORDS = {"accuracy": "top-1 accuracy", "agreement": "top-1 agreement with the float model"}
NOT_READY_TEXT = "Open a model and choose evaluation data (Data menu) to measure each layer's sensitivity."
IDLE_TEXT = "Probe each layer alone with the checked settings, the rest of the model float; then Run."


def bar_value(row: SensitivityRow, sqnr_cap: float) -> float:
    """The drop in points; for a model that is not a classifier the output SQNR (identical: capped)."""
    if row.drop is not None:
        return 100 * row.drop
    if row.sqnr_db is None:
        return 0.0
    return sqnr_cap if math.isinf(row.sqnr_db) else row.sqnr_db


def bar_color(row: SensitivityRow) -> QColor:
    if not row.applied:
        return NOT_MEASURED
    if row.drop is not None:
        fraction = 1.0 - min(max(100 * row.drop / BAD_DROP_PT, 0.0), 1.0)
    elif row.sqnr_db is None:
        return NOT_MEASURED
    else:
        fraction = min(max((row.sqnr_db - BAD_DB) / (GOOD_DB - BAD_DB), 0.0), 1.0)  # inf → 1
    return ERROR_COLORS.map(fraction, mode="qcolor")


def bar_tooltip(row: SensitivityRow, metric: str) -> str:
    head = f"{row.layer}\n{row.setting} on this layer alone ({row.samples} samples)"
    if not row.applied:
        return f"{head}\nnot applied: {row.note or 'the setting does not fit this layer'}"
    lines = [head]
    if row.drop is not None:
        lines.append(f"drop {100 * row.drop:.2f} points of {METRIC_WORDS.get(metric, metric)}")
    if row.sqnr_db is not None:
        lines.append("outputs identical" if math.isinf(row.sqnr_db) else f"output SQNR {row.sqnr_db:.1f} dB")
    lines.append(row.form)
    return "\n".join(lines)


def status_text(report: SensitivityReport) -> str:
    done = len(report.rows)
    if not report.complete:
        if done < report.probes:
            return f"{done}/{report.probes} probes, on {report.quick_samples} samples…"
        return f"{done}/{report.probes} probes; refining the most sensitive on {report.max_samples} samples…"
    samples = (
        f"{report.quick_samples} samples"
        if report.quick_samples == report.max_samples
        else f"{report.quick_samples}–{report.max_samples} samples"
    )
    measure = METRIC_WORDS.get(report.metric, "output SQNR (the output is not a classifier)")
    return " ".join([f"{report.probes} probes on {samples}; drop in {measure}.", *report.notes])


class SensitivityPanel(QWidget):
    """Emits `layer_clicked(name)` when a bar is clicked, `rows_shown({layer: row})` with the chosen
    setting's rows whenever they change (empty when there is no sweep)."""

    layer_clicked = Signal(str)
    rows_shown = Signal(dict)

    def __init__(self, session: Session, analysis: Analysis, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session, self.analysis = session, analysis
        self.report: SensitivityReport | None = None
        self.max_samples = DEFAULT_MAX_SAMPLES  # evaluation samples the sweep refines on, at most
        self._sweeping = False  # this panel started the analysis' current job and has not seen it end
        self.boxes: dict[str, QCheckBox] = {}
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Measure every layer's sensitivity to the checked settings")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the sweep (the results so far stay)")
        self.setting = QComboBox(sizeAdjustPolicy=QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.setting.setToolTip("The probed setting the chart and the layer table's column show")
        self.progress = QProgressBar(textVisible=True)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.chart = LayerBarChart("drop when this layer alone is changed (points)")
        self.ray_address = QLineEdit(settings.ray_address(), placeholderText="this computer")
        self.ray_address.setToolTip(
            "Run the probes on an existing Ray cluster: 'auto' (the cluster this computer belongs to) or "
            "HOST:PORT of its head node. Empty: this computer. Needs `pip install slimscope[ray]`."
        )
        self.ray_address.editingFinished.connect(lambda: settings.set_ray_address(self.ray_address.text()))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(self._setting_boxes())
        row = QHBoxLayout()
        for widget in (QLabel("Show:"), self.setting, self.progress, self.run_button, self.cancel_button):
            row.addWidget(widget, 1 if widget is self.progress else 0)
        layout.addLayout(row)
        where = QHBoxLayout()
        where.addWidget(QLabel("Run on Ray cluster:"))
        where.addWidget(self.ray_address, 1)
        layout.addLayout(where)
        layout.addWidget(self.status)
        layout.addWidget(self.chart)
        self.redraw_timer = QTimer(self, singleShot=True, interval=REDRAW_MS)
        self.redraw_timer.timeout.connect(self.redraw)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.setting.currentIndexChanged.connect(self.redraw)
        self.chart.bar_clicked.connect(self.layer_clicked)
        analysis.report_changed.connect(self.show_report)
        analysis.progressed.connect(self._on_progress)
        analysis.running_changed.connect(self._on_running)
        analysis.failed.connect(self._on_failed)
        session.model_changed.connect(self.clear)
        session.data_changed.connect(self.clear)  # sensitivities measured on other data no longer hold
        self.clear()

    def _setting_boxes(self) -> QGridLayout:
        """A check box per probe setting, three to a row (the tab shares the middle column's width)."""
        grid = QGridLayout()
        for index, setting in enumerate(DEFAULT_SETTINGS):
            box = QCheckBox(setting.label, checked=setting.key in CHECKED_BY_DEFAULT)
            box.setToolTip(f"Probe every layer with {setting.label}, one layer at a time")
            box.toggled.connect(self._sync_controls)
            self.boxes[setting.key] = box
            grid.addWidget(box, index // 3, index % 3)
        grid.setColumnStretch(3, 1)
        return grid

    @property
    def running(self) -> bool:
        """True while this panel's sweep runs (not the automatic recipe's)."""
        return self.analysis.running and self.analysis.job == SENSITIVITY

    def checked_settings(self) -> list[str]:
        return [key for key, box in self.boxes.items() if box.isChecked()]

    def set_checked(self, keys: list[str]) -> None:
        for key, box in self.boxes.items():
            box.setChecked(key in keys)

    def run(self) -> None:
        """Sweep every layer with the checked settings; the chart fills as the results come."""
        keys = self.checked_settings()
        address = self.ray_address.text().strip()
        settings.set_ray_address(address)
        if not self.analysis.run_sensitivity(keys, self.max_samples, address or None):
            return
        self._sweeping = True
        self.report = None
        # In the order the sweep probes them (cheap settings first): the setting shown fills first.
        cost = {setting.key: setting.cost_rank for setting in DEFAULT_SETTINGS}
        self._set_setting_choices(sorted(keys, key=lambda key: cost.get(key, 0)))
        self.progress.setRange(0, 0)
        self.status.setText("Starting…")
        self.redraw()

    def cancel(self) -> None:
        if self.running:
            self.analysis.cancel()

    def clear(self, *_args: object) -> None:
        self._sweeping = False
        self.report = None
        self._set_setting_choices([])
        self.progress.reset()
        self.redraw()
        self._sync_controls()

    def show_report(self, report: SensitivityReport) -> None:
        """A partial report (redrawn soon) or the complete one (now)."""
        self.report = report
        if report.complete:
            self.redraw_timer.stop()
            self.progress.setRange(0, 1)
            self.progress.setValue(1)
            self.redraw()
        elif not self.redraw_timer.isActive():
            self.redraw_timer.start()

    def shown_rows(self) -> list[SensitivityRow]:
        """The chosen setting's rows, most sensitive first (the report's order)."""
        key = self.setting.currentData()
        if self.report is None or key is None:
            return []
        return [row for row in self.report.rows if row.setting_key == key]

    def redraw(self, *_args: object) -> None:
        rows = self.shown_rows()
        report = self.report
        if report is not None:
            self.status.setText(status_text(report))
        elif not self.running:
            self.status.setText(IDLE_TEXT if self.analysis.ready else NOT_READY_TEXT)
        metric = "sqnr" if report is None else report.metric
        self.chart.setLabel(
            "bottom",
            "output SQNR when this layer alone is changed (dB)"
            if metric == "sqnr"
            else "drop when this layer alone is changed (points)",
        )
        finite = [r.sqnr_db for r in rows if r.sqnr_db is not None and math.isfinite(r.sqnr_db)]
        cap = max(IDENTICAL_DB, 1.1 * max(finite, default=0.0))
        self.chart.set_bars(
            [r.layer for r in rows], [bar_value(r, cap) for r in rows], [bar_color(r) for r in rows],
            [bar_tooltip(r, metric) for r in rows],
        )  # fmt: skip
        self.rows_shown.emit({row.layer: row for row in rows})

    def _set_setting_choices(self, keys: list[str]) -> None:
        labels = {setting.key: setting.label for setting in DEFAULT_SETTINGS}
        self.setting.blockSignals(True)
        self.setting.clear()
        for key in keys:
            self.setting.addItem(labels.get(key, key), key)
        self.setting.blockSignals(False)
        self.setting.setEnabled(bool(keys))

    def _sync_controls(self, *_args: object) -> None:
        running = self.running
        self.run_button.setEnabled(self.analysis.ready and bool(self.checked_settings()) and not running)
        self.cancel_button.setEnabled(running)
        self.progress.setVisible(running or self.report is not None)

    def _on_progress(self, job: str, progress: Progress) -> None:
        if job != SENSITIVITY:
            return
        if progress.fraction is None:
            self.progress.setRange(0, 0)
        else:
            self.progress.setRange(0, 1000)
            self.progress.setValue(round(progress.fraction * 1000))
        self.progress.setToolTip(progress.message)
        if self.report is None:
            self.status.setText(progress.message)

    def _on_running(self, _running: bool) -> None:
        if self._sweeping and not self.running:  # ended: complete, cancelled, replaced or failed
            self._sweeping = False
            self._stopped("Stopped")
        self._sync_controls()

    def _on_failed(self, job: str, _exc: object) -> None:
        if job == SENSITIVITY and self._sweeping:
            self._sweeping = False  # the error itself goes to the window's error funnel
            self._stopped("The sweep failed")

    def _stopped(self, how: str) -> None:
        """The sweep ended before its complete report: show the rows that did arrive."""
        report = self.report
        if report is not None and report.complete:
            return
        self.redraw_timer.stop()
        self.redraw()
        done = "" if report is None else f" after {len(report.rows)}/{report.probes} probes"
        self.status.setText(f"{how}{done}.")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
