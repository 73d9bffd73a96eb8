"""`LayerErrorPanel`: how far each layer's output moved in the latest comparison (its SQNR in dB), worst
first, so that the layers the optimization hurt most sit at the top and can be relaxed in the recipe."""

from __future__ import annotations

import math
from collections.abc import Iterable

import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from slimscope.core.comparison import Comparison
from slimscope.core.evaluate import LayerError
from slimscope.core.session import Session
from slimscope.gui.panels.layer_bar_chart import LayerBarChart

# Colour scale: red at or below 10 dB (noise a tenth of the signal's power), green from 40 dB (1/10,000).
BAD_DB, GOOD_DB = 10.0, 40.0
ERROR_COLORS = pg.ColorMap([0.0, 0.5, 1.0], [(200, 30, 30), (235, 170, 40), (40, 150, 60)])
IDENTICAL_DB = 60.0  # the least length of the capped bar of an identical (infinite SQNR) layer
NOT_MEASURED = QColor(170, 170, 170)
EMPTY_TEXT = "No per-layer errors measured yet."
CHART_TEXT = (
    "SQNR of each layer's output, optimized against original (dB; higher is closer). "
    "Worst first; {count} layers."
)


def worst_first(layers: Iterable[LayerError]) -> list[LayerError]:
    """Lowest SQNR first, identical layers (inf) after every measured one, unmeasured ones (None) last."""
    return sorted(layers, key=lambda error: (error.sqnr_db is None, error.sqnr_db or 0.0))


def bar_lengths(errors: list[LayerError]) -> list[float]:
    """SQNR per bar: identical layers capped just beyond the best measured one, unmeasured ones empty."""
    finite = [e.sqnr_db for e in errors if e.sqnr_db is not None and math.isfinite(e.sqnr_db)]
    cap = max(IDENTICAL_DB, 1.1 * max(finite, default=0.0))
    return [0.0 if e.sqnr_db is None else (cap if math.isinf(e.sqnr_db) else e.sqnr_db) for e in errors]


def _color(sqnr: float | None) -> QColor:
    if sqnr is None:
        return NOT_MEASURED
    fraction = min(max((sqnr - BAD_DB) / (GOOD_DB - BAD_DB), 0.0), 1.0)  # inf → 1
    return ERROR_COLORS.map(fraction, mode="qcolor")


def _tooltip(error: LayerError) -> str:
    if error.sqnr_db is None:
        return f"{error.name}\nnot measured: {error.note or 'no comparable output'}"
    if math.isinf(error.sqnr_db):
        return f"{error.name}\nidentical to the original (infinite SQNR; bar capped)\noutput: {error.tensor}"
    return f"{error.name}\nSQNR {error.sqnr_db:.1f} dB\noutput: {error.tensor}"


class LayerErrorPanel(QWidget):
    """Emits `layer_clicked(name)` when a layer's bar is clicked."""

    layer_clicked = Signal(str)

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.status = QLabel(EMPTY_TEXT)
        self.status.setWordWrap(True)
        self.chart = LayerBarChart("SQNR (dB)")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.status)
        layout.addWidget(self.chart)
        self.chart.bar_clicked.connect(self.layer_clicked)
        session.result_changed.connect(self.show_result)
        self.show_result(session.result)

    def show_result(self, result: Comparison | None) -> None:
        errors = worst_first(() if result is None else result.report.layers)
        if not errors:
            self.status.setText(EMPTY_TEXT)
            self.chart.set_bars([], [], [], [])
            return
        self.status.setText(CHART_TEXT.format(count=len(errors)))
        self.chart.set_bars(
            [e.name for e in errors], bar_lengths(errors), [_color(e.sqnr_db) for e in errors],
            [_tooltip(e) for e in errors],
        )  # fmt: skip
