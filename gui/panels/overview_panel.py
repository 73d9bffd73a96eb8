"""`OverviewPanel`: the whole model at a glance — parameters, MACs or weight bytes of every layer as bars,
coloured by each layer's share of the total so that the heavy layers (the ones worth pruning) stand out."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx
import pyqtgraph as pg
from onnx import helper
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from slimscope.core.inspection import ModelReport
from slimscope.core.inspection_table import human_bytes, human_count
from slimscope.core.session import Session
from slimscope.gui.panels.layer_bar_chart import LayerBarChart

# Light for a small share of the total, deep red for the largest one.
SHARE_COLORS = pg.ColorMap([0.0, 0.5, 1.0], [(176, 196, 222), (240, 150, 60), (200, 30, 30)])


def tensor_bytes(tensor: onnx.TensorProto) -> int:
    """Bytes a weight takes in the file (raw bytes when stored so: packed int4 counts half a byte)."""
    if tensor.raw_data:
        return len(tensor.raw_data)
    itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    return math.prod(tensor.dims) * itemsize


def layer_weight_bytes(report: ModelReport) -> list[int]:
    """Bytes of each layer's weight and bias, in the report's layer order."""
    inits = {tensor.name: tensor for tensor in report.loaded.model.graph.initializer}
    return [
        sum(tensor_bytes(inits[name]) for name in (layer.weight, layer.bias) if name in inits)
        for layer in report.layers
    ]


# Quantity shown → (its values per layer, None where unknown; how one value is written).
QUANTITIES: dict[str, tuple[Callable[[ModelReport], list[int | None]], Callable[[int], str]]] = {
    "parameters": (lambda report: [layer.params for layer in report.layers], human_count),
    "MACs": (lambda report: [layer.macs for layer in report.layers], human_count),
    "weight bytes": (layer_weight_bytes, human_bytes),  # type: ignore[dict-item]
}


class OverviewPanel(QWidget):
    """Emits `layer_clicked(name)` when a layer's bar is clicked."""

    layer_clicked = Signal(str)

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.quantity = QComboBox()
        self.quantity.addItems(list(QUANTITIES))
        self.quantity.setToolTip(
            "What each bar measures: weights, multiply-accumulates per inference, or bytes"
        )
        self.sort_by_size = QCheckBox("sort by size")
        self.sort_by_size.setToolTip("Largest layers first instead of the model's own layer order")
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.chart = LayerBarChart("per layer")
        controls = QHBoxLayout()
        controls.addWidget(self.quantity)
        controls.addWidget(self.sort_by_size)
        controls.addStretch()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(controls)
        layout.addWidget(self.summary)
        layout.addWidget(self.chart)
        self.quantity.currentTextChanged.connect(self.redraw)
        self.sort_by_size.toggled.connect(self.redraw)
        self.chart.bar_clicked.connect(self.layer_clicked)
        session.model_changed.connect(self.redraw)
        session.report_changed.connect(self.redraw)  # MACs counted at another input size
        self.redraw()

    def redraw(self, *_args: object) -> None:
        report, name = self.session.report, self.quantity.currentText()
        if report is None or not report.layers:
            self.summary.setText("No model open." if report is None else "This model has no weighted layers.")
            self.chart.set_bars([], [], [], [])
            return
        measure, show = QUANTITIES[name]
        values = measure(report)
        known = [0 if value is None else value for value in values]
        total = sum(known)
        shares = [value / total if total else 0.0 for value in known]
        rows = list(range(len(values)))
        if self.sort_by_size.isChecked():
            rows.sort(key=lambda row: -known[row])
        top = max(shares)
        colors = SHARE_COLORS.map([shares[row] / top if top else 0.0 for row in rows], mode="qcolor")
        tooltips = [_tooltip(report.layers[row].name, name, values[row], shares[row], show) for row in rows]
        self.chart.set_bars(
            [report.layers[row].name for row in rows], [known[row] for row in rows], colors, tooltips
        )
        self.chart.setLabel("bottom", f"{name} per layer")
        unknown = sum(value is None for value in values)
        note = f" — {unknown} layer{'s' if unknown != 1 else ''} unknown, shown as 0" if unknown else ""
        heaviest = report.layers[max(range(len(known)), key=known.__getitem__)].name
        self.summary.setText(
            f"{name[0].upper()}{name[1:]} of {len(values)} layers: {show(total)} in all; the largest, {heaviest}, "
            f"holds {top:.0%}{note}."
        )


def _tooltip(layer: str, quantity: str, value: int | None, share: float, show: Callable[[int], str]) -> str:
    if value is None:
        return f"{layer}\n{quantity}: unknown (the input shape leaves them open), shown as 0"
    return f"{layer}\n{quantity}: {show(value)} ({value:,})\n{share:.1%} of the layers' total"
