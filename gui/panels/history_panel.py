"""`HistoryPanel`: every recipe evaluated since the model was opened, as a point of quality vs latency and
vs file size, joined in the order they were made; clicking a point asks to go back to its recipe.

The bookkeeping (one point per recipe, the cap, which metric) is core's `History`; this panel draws it.
"""

from __future__ import annotations

import math

import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from slimscope.core.comparison import Comparison
from slimscope.core.history import METRIC_TITLES, History, HistoryEntry, ModelPoint, recipe_summary
from slimscope.core.recipe import Recipe
from slimscope.core.session import Session

ORIGINAL = "original"  # the data of the original model's star (not a recipe: clicking it does nothing)
POINT_STYLE = {"symbol": "o", "size": 9, "pen": pg.mkPen("#2b7fd0"), "brush": pg.mkBrush(43, 127, 208, 170)}
CURRENT_STYLE = {
    "symbol": "o",
    "size": 15,
    "pen": pg.mkPen("#d95f02", width=3),
    "brush": pg.mkBrush("#fdb863"),
}
AUTO_STYLE = {"symbol": "d", "size": 12, "pen": pg.mkPen("#5e3c99"), "brush": pg.mkBrush(94, 60, 153, 170)}
ORIGINAL_STYLE = {"symbol": "star", "size": 18, "pen": pg.mkPen("#7a5c00"), "brush": pg.mkBrush("#f2c12e")}


def metric_value(metric: str | None, value: float | None) -> float | None:
    """The value as plotted: fractions in percent, SQNR in dB; None when it cannot be drawn (an
    identical model's infinite SQNR)."""
    if value is None or not math.isfinite(value):
        return None
    return 100 * value if metric in ("accuracy", "agreement") else value


def metric_text(metric: str | None, value: float | None) -> str:
    if metric is None or value is None:
        return "no quality metric"
    title = METRIC_TITLES[metric]
    if metric == "sqnr_db":
        return f"{title} {'identical' if math.isinf(value) else f'{value:.1f} dB'}"
    return f"{title} {value:.1%}"


def point_text(point: ModelPoint, metric: str | None) -> str:
    latency = "latency not timed" if point.latency_ms is None else f"latency {point.latency_ms:.3g} ms"
    return f"{metric_text(metric, point.metric)}\n{latency} · size {point.size_kb:.1f} kB"


class HistoryPlot(pg.PlotWidget):
    """The metric against one x quantity: a faint path through the points, the points, the original."""

    def __init__(self, x_label: str, x_of, tip) -> None:
        super().__init__()  # colours: gui.theme (pyqtgraph config)
        self.x_of = x_of  # ModelPoint -> x, or None when this plot cannot place it
        self.setLabel("bottom", x_label)
        for axis in (
            "bottom",
            "left",
        ):  # values as the label says: no "(x0.001)" on sub-millisecond latencies
            self.getAxis(axis).enableAutoSIPrefix(False)
        self.showGrid(x=True, y=True, alpha=0.2)
        self.path = pg.PlotDataItem(pen=pg.mkPen(120, 120, 120, 90, width=1))
        self.scatter = pg.ScatterPlotItem(hoverable=True, tip=tip)
        self.addItem(self.path)
        self.addItem(self.scatter)

    def show_history(
        self, history: History, current: HistoryEntry | None, marked: frozenset[Recipe] = frozenset()
    ) -> None:
        """Every entry as a point (`marked` recipes, the automatic recipe's candidates, as diamonds)."""
        placed = [(entry, self._place(entry.point, history.metric)) for entry in history]
        placed = [(entry, xy) for entry, xy in placed if xy is not None]
        xs = [xy[0] for _, xy in placed]
        ys = [xy[1] for _, xy in placed]
        self.path.setData(xs, ys)
        spots = [{"pos": xy, "data": e, **_style(e, current, marked)} for e, xy in placed]
        original = None if history.original is None else self._place(history.original, history.metric)
        if original is not None:
            spots.insert(0, {"pos": original, "data": ORIGINAL, **ORIGINAL_STYLE})
        self.scatter.setData(spots=spots)

    def _place(self, point: ModelPoint, metric: str | None) -> tuple[float, float] | None:
        x, y = self.x_of(point), metric_value(metric, point.metric)
        return None if x is None or y is None else (x, y)


def _style(entry: HistoryEntry, current: HistoryEntry | None, marked: frozenset[Recipe]) -> dict:
    if entry is current:
        return CURRENT_STYLE
    return AUTO_STYLE if entry.recipe in marked else POINT_STYLE


class HistoryPanel(QWidget):
    recipe_requested = Signal(object)  # Recipe: the user clicked its point

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.history = History()
        self.candidates: set[Recipe] = set()  # recipes the automatic recipe verified (drawn as diamonds)
        self.status = QLabel()
        self.clear_button = QPushButton("Clear")
        self.clear_button.setToolTip("Forget every point (the recipes themselves are kept in undo)")
        self.clear_button.clicked.connect(self.clear)
        tip = self._tip
        self.latency_plot = HistoryPlot(
            "latency, optimized model, 1 thread (ms)", lambda p: p.latency_ms, tip
        )
        self.size_plot = HistoryPlot("file size (kB)", lambda p: p.size_kb, tip)
        self.size_plot.setYLink(self.latency_plot)  # one metric: the same vertical scale in both
        for plot in self.plots:
            plot.scatter.sigClicked.connect(self.on_points_clicked)
        header = QHBoxLayout()
        header.addWidget(self.status, 1)
        header.addWidget(self.clear_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(header)
        layout.addWidget(self.latency_plot)
        layout.addWidget(self.size_plot)
        session.result_changed.connect(self.add_result)
        session.model_changed.connect(self.clear)
        # Other data give other numbers: points measured on different data must not share a plot.
        session.data_changed.connect(self.clear)
        session.recipe_changed.connect(self.redraw)
        self.add_result(session.result)

    @property
    def plots(self) -> tuple[HistoryPlot, HistoryPlot]:
        return self.latency_plot, self.size_plot

    def add_result(self, result: Comparison | None) -> None:
        if result is not None:
            self.history.add(result)
            self.redraw()

    def add_candidate(self, comparison: Comparison) -> None:
        """A recipe the automatic recipe verified: a point like any other, marked as a candidate."""
        self.candidates.add(comparison.recipe)
        self.add_result(comparison)

    def clear(self, *_args: object) -> None:
        self.history.clear()
        self.candidates.clear()
        self.redraw()

    def redraw(self, *_args: object) -> None:
        current = self.history.entry_for(self.session.recipe)
        for plot in self.plots:
            plot.show_history(self.history, current, frozenset(self.candidates))
        metric = self.history.metric
        title = METRIC_TITLES[metric] if metric else "quality"
        unit = " (dB)" if metric == "sqnr_db" else " (%)"
        for plot in self.plots:
            plot.setLabel("left", title + unit)
        count = len(self.history)
        self.status.setText(
            f"{count} recipe{'s' if count != 1 else ''} evaluated; click a point to go back to its recipe."
            if count
            else "No recipes evaluated yet."
        )
        self.clear_button.setEnabled(count > 0)

    def on_points_clicked(self, _item: object, points, _event: object = None) -> None:
        """sigClicked: go back to the recipe of the topmost point clicked (the original's star has none)."""
        entries = [point.data() for point in points if isinstance(point.data(), HistoryEntry)]
        if entries:  # pyqtgraph lists the topmost point first
            self.recipe_requested.emit(entries[0].recipe)

    def _tip(self, x: float, y: float, data: object) -> str:
        metric = self.history.metric
        if isinstance(data, HistoryEntry):
            auto = "\nautomatic recipe candidate" if data.recipe in self.candidates else ""
            return f"#{data.number}: {point_text(data.point, metric)}\n{recipe_summary(data.recipe)}{auto}"
        if self.history.original is not None:
            return f"Original model: {point_text(self.history.original, metric)}"
        return ""
