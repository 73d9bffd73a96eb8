"""`HistogramPanel`: the selected layer's weight histogram (core's bins), with a log-count option, the
optimized weights overlaid once a comparison has made them, and the prune threshold as a pair of
draggable lines at ±t (dragging one sets the threshold of the selected layers)."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QCheckBox, QVBoxLayout, QWidget

from slimscope.core.stats import LayerStats

# A mid blue that reads on the light and the dark plot background alike (contrast ≥ 3:1 on both).
CURVE_COLOUR = "#2b7fd0"
CURVE_FILL = (43, 127, 208, 90)
# Orange for the optimized weights and the threshold: distinct from the blue for colour-blind viewers too.
OPTIMIZED_COLOUR = "#e8710a"
THRESHOLD_COLOUR = "#d62728"
_DASH = Qt.PenStyle.DashLine


class HistogramPanel(QWidget):
    threshold_dragged = Signal(float)  # the new magnitude threshold, when the user lets go of a line

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
        self.optimized_curve = pg.PlotDataItem(stepMode="center", pen=pg.mkPen(OPTIMIZED_COLOUR, width=2))
        self.plot.addItem(self.optimized_curve)
        self.legend = self.plot.addLegend(offset=(-10, 10))
        self.legend.addItem(self.curve, "original")
        self.legend.addItem(self.optimized_curve, "optimized")
        self.threshold_lines = [
            pg.InfiniteLine(angle=90, movable=True, pen=pg.mkPen(THRESHOLD_COLOUR, width=2, style=_DASH))
            for _ in range(2)
        ]
        for line, other in zip(self.threshold_lines, reversed(self.threshold_lines), strict=True):
            line.setToolTip("Prune threshold: weights with |w| below it become zero. Drag to change it.")
            line.sigDragged.connect(lambda moved, other=other: self._mirror(moved, other))
            line.sigPositionChangeFinished.connect(self._on_line_released)
            line.setVisible(False)
            self.plot.addItem(line, ignoreBounds=True)
        self.log_counts = QCheckBox("log counts")
        self.log_counts.setToolTip("Logarithmic counts: shows the sparse tails of the distribution")
        self.log_counts.toggled.connect(self._on_log_toggled)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot)
        layout.addWidget(self.log_counts)

    def show_stats(
        self,
        name: str,
        stats: LayerStats,
        optimized: LayerStats | None = None,
        threshold: float | None = None,
    ) -> None:
        """The original histogram, the optimized one over it when given, and the threshold lines."""
        self.plot.setTitle(f"Weights of {name}", size="9pt")
        self.curve.setData(x=stats.histogram_edges, y=stats.histogram_counts)
        if optimized is None:
            self.optimized_curve.setData([], [])
        else:
            self.optimized_curve.setData(x=optimized.histogram_edges, y=optimized.histogram_counts)
        self.optimized_curve.setVisible(optimized is not None)
        self.show_threshold(threshold)
        self.plot.enableAutoRange()

    def show_threshold(self, threshold: float | None) -> None:
        for line, sign in zip(self.threshold_lines, (1, -1), strict=True):
            line.setVisible(threshold is not None)
            if threshold is not None:
                line.blockSignals(True)
                line.setValue(sign * threshold)
                line.blockSignals(False)

    @property
    def threshold(self) -> float | None:
        line = self.threshold_lines[0]
        return abs(float(line.value())) if line.isVisible() else None

    def clear(self) -> None:
        self.plot.setTitle(None)
        self.curve.setData([], [])
        self.optimized_curve.setData([], [])
        self.show_threshold(None)

    def _mirror(self, moved: pg.InfiniteLine, other: pg.InfiniteLine) -> None:
        other.blockSignals(True)
        other.setValue(-float(moved.value()))
        other.blockSignals(False)

    def _on_line_released(self, line: pg.InfiniteLine) -> None:
        self.threshold_dragged.emit(abs(float(line.value())))

    def _on_log_toggled(self, checked: bool) -> None:
        # Bars fill down from 1 in log mode (log10(1) = 0); empty bins are not drawn.
        self.curve.setFillLevel(0)
        self.plot.setLogMode(x=False, y=checked)
        self.plot.setLabel("left", "count (log)" if checked else "count")
        self.plot.enableAutoRange()
