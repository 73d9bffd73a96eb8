"""`LayerBarChart`: one horizontal bar per layer, names on the left axis, a tooltip on hover, click to pick.

Shared by the whole-model charts (parameters/MACs/bytes per layer, per-layer error). Bars lie horizontally
so that long layer names fit on the left axis; the view scrolls and zooms along the layers only, and the
axis thins its names when they would overlap, so 5 and 200 layers both read well.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QCursor, QFontMetricsF
from PySide6.QtWidgets import QToolTip

from slimscope.core.inspection_table import short_layer_name

BAR_HEIGHT = 0.8  # of a row: a small gap between bars
VISIBLE_ROWS = 30  # rows shown at first; the rest are a scroll (drag or wheel) away
NAME_CHARS = 34  # axis labels longer than this are cut at the front (the tooltip has the full name)


def short_name(name: str, limit: int = NAME_CHARS) -> str:
    """`name` shortened for an axis label (what is still too long keeps its end)."""
    return short_layer_name(name, limit)


class LayerAxis(pg.AxisItem):
    """A left axis that names the bar at each integer position, skipping names that would overlap."""

    def __init__(self) -> None:
        super().__init__("left")
        self.names: list[str] = []

    def set_names(self, names: list[str]) -> None:
        self.names = names
        self.picture = None  # redraw the ticks even when the range did not change
        self.update()

    def tickValues(self, minVal: float, maxVal: float, size: float) -> list:  # noqa: N802,N803 (Qt style)
        minVal, maxVal = sorted((minVal, maxVal))  # an inverted view passes them the other way round
        first, last = max(0, math.ceil(minVal)), min(len(self.names) - 1, math.floor(maxVal))
        if last < first or size <= 0:
            return []
        pixels_per_row = size / max(maxVal - minVal, 1e-9)
        step = max(1, math.ceil(1.2 * QFontMetricsF(self.font()).height() / pixels_per_row))
        start = math.ceil(first / step) * step
        return [(float(step), list(range(start, last + 1, step)))]

    def tickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:  # noqa: N802
        return [
            short_name(self.names[int(round(v))]) if 0 <= round(v) < len(self.names) else "" for v in values
        ]


class ValueAxis(pg.AxisItem):
    """A value axis whose ticks carry SI prefixes ("500 k", "2 M"), one prefix for the whole axis.

    pyqtgraph's own auto SI prefix scales the ticks but moves the prefix into the axis label next to a
    unit; layer counts (parameters, MACs) have no unit, so the prefix goes on each tick instead."""

    def __init__(self, orientation: str = "bottom") -> None:
        super().__init__(orientation)
        self.enableAutoSIPrefix(False)  # no "(x1e+06)" in the label: the ticks say it

    def tickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:  # noqa: N802
        largest = max((abs(v) for v in values), default=0.0)
        if largest < 1000:
            return super().tickStrings(values, scale, spacing)
        factor, prefix = pg.siScale(largest)
        return [f"{v * factor:.3g} {prefix}" if v else "0" for v in values]


class LayerBarChart(pg.PlotWidget):
    """Emits `bar_clicked(layer name)` when a bar's row is clicked."""

    bar_clicked = Signal(str)

    def __init__(self, value_label: str, parent=None) -> None:
        self.axis = LayerAxis()
        self.value_axis = ValueAxis()
        # Colours: gui.theme (pyqtgraph's config options), so that the chart follows light and dark.
        super().__init__(parent, axisItems={"left": self.axis, "bottom": self.value_axis})
        self.setLabel("bottom", value_label)
        self.invertY(True)  # the first bar at the top, like the table
        self.setMouseEnabled(x=False, y=True)
        self.names: list[str] = []
        self.values = np.zeros(0)
        self.tooltips: list[str] = []
        # Made once, updated in place with setOpts.
        self.bars = pg.BarGraphItem(x0=[], y=[], height=BAR_HEIGHT, width=[], pen=None)
        self.addItem(self.bars)
        self.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self.scene().sigMouseClicked.connect(self._on_mouse_clicked)

    def set_bars(
        self, names: Sequence[str], values: Sequence[float], colors: Sequence[QColor], tooltips: Sequence[str]
    ) -> None:
        """One bar per layer, top to bottom in the given order."""
        self.names, self.values, self.tooltips = list(names), np.asarray(values, float), list(tooltips)
        rows = len(self.names)
        self.bars.setOpts(
            x0=np.zeros(rows), y=np.arange(rows), height=BAR_HEIGHT, width=self.values,
            brushes=[QBrush(color) for color in colors],
        )  # fmt: skip
        self.axis.set_names(self.names)
        self.setLimits(yMin=-1, yMax=max(rows, 1), maxYRange=max(rows, 1) + 1)
        self.setYRange(-0.5, min(rows, VISIBLE_ROWS) - 0.5, padding=0.02)
        self.enableAutoRange(axis="x")

    def row_at(self, scene_pos: QPointF) -> int | None:
        """The bar row under a scene position, or None outside the plot or the bars."""
        view = self.getViewBox()
        if not view.sceneBoundingRect().contains(scene_pos):
            return None
        row = round(view.mapSceneToView(scene_pos).y())
        return row if 0 <= row < len(self.names) else None

    def scene_pos_of(self, row: int) -> QPointF:
        """The middle of a row's bar in scene coordinates (where a click picks that layer)."""
        return self.getViewBox().mapViewToScene(QPointF(float(self.values[row]) / 2, float(row)))

    def pick(self, row: int) -> None:
        """What clicking a row does."""
        self.bar_clicked.emit(self.names[row])

    def _on_mouse_moved(self, scene_pos: QPointF) -> None:
        row = self.row_at(scene_pos)
        if row is None:
            QToolTip.hideText()
        else:
            QToolTip.showText(QCursor.pos(), self.tooltips[row], self)

    def _on_mouse_clicked(self, event) -> None:
        if event.button() != Qt.MouseButton.LeftButton:
            return
        row = self.row_at(event.scenePos())
        if row is not None:
            self.pick(row)
