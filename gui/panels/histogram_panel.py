"""`HistogramPanel`: the selected layer's weight histogram (core's bins), with a log-count option."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtWidgets import QCheckBox, QVBoxLayout, QWidget

from slimscope.core.stats import LayerStats

# A mid blue that reads on the light and the dark plot background alike (contrast ≥ 3:1 on both).
CURVE_COLOUR = "#2b7fd0"
CURVE_FILL = (43, 127, 208, 90)


class HistogramPanel(QWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.plot = pg.PlotWidget()  # colours: gui.theme (pyqtgraph config)
        self.plot.setLabel("bottom", "weight value")
        self.plot.setLabel("left", "count")
        self.plot.setMouseEnabled(y=False)
        # Made once, updated in place with setData.
        self.curve = pg.PlotDataItem(
            stepMode="center", fillLevel=0, pen=pg.mkPen(CURVE_COLOUR), brush=pg.mkBrush(*CURVE_FILL)
        )
        self.plot.addItem(self.curve)
        self.log_counts = QCheckBox("log counts")
        self.log_counts.setToolTip("Logarithmic counts: shows the sparse tails of the distribution")
        self.log_counts.toggled.connect(self._on_log_toggled)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot)
        layout.addWidget(self.log_counts)

    def show_stats(self, name: str, stats: LayerStats) -> None:
        self.plot.setTitle(f"Weights of {name}", size="9pt")
        self.curve.setData(x=stats.histogram_edges, y=stats.histogram_counts)
        self.plot.enableAutoRange()

    def clear(self) -> None:
        self.plot.setTitle(None)
        self.curve.setData([], [])

    def _on_log_toggled(self, checked: bool) -> None:
        # Bars fill down from 1 in log mode (log10(1) = 0); empty bins are not drawn.
        self.curve.setFillLevel(0)
        self.plot.setLogMode(x=False, y=checked)
        self.plot.setLabel("left", "count (log)" if checked else "count")
        self.plot.enableAutoRange()
