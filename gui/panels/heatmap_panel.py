"""`HeatmapPanel`: the selected layer's sparsity map (zero fraction per output channel × input block)."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QVBoxLayout, QWidget

from slimscope.core.stats import LayerStats


class HeatmapPanel(QWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.plot = pg.PlotWidget()  # colours: gui.theme (pyqtgraph config)
        self.plot.setLabel("bottom", "input block")
        self.plot.setLabel("left", "output channel")
        self.plot.invertY(True)  # channel 0 at the top, like the table
        self.plot.setAspectLocked(False)
        # Made once, updated in place with setImage; fixed 0–1 levels so colours mean the same everywhere.
        self.image = pg.ImageItem(axisOrder="row-major")
        self.plot.addItem(self.image)
        self.color_bar = pg.ColorBarItem(
            values=(0, 1), colorMap=pg.colormap.get("viridis"), interactive=False, label="zero fraction"
        )
        self.color_bar.setImageItem(self.image, insert_in=self.plot.getPlotItem())
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot)

    def show_stats(self, name: str, stats: LayerStats) -> None:
        self.plot.setTitle(f"Sparsity of {name}", size="9pt")
        self.image.setImage(stats.sparsity_map, autoLevels=False, levels=(0.0, 1.0))
        self.plot.autoRange()

    def clear(self) -> None:
        self.plot.setTitle(None)
        self.image.setImage(np.zeros((1, 1)), autoLevels=False, levels=(0.0, 1.0))
