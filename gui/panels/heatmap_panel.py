"""`HeatmapPanel`: the selected layer's sparsity map (zero fraction per output channel × input block), and
beside it the optimized weights' map once a comparison has made them; one colour bar, fixed 0–1 levels."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtWidgets import QHBoxLayout, QWidget

from slimscope.core.inspection_table import short_layer_name
from slimscope.core.stats import LayerStats

_EMPTY = np.zeros((1, 1))
TITLE_CHARS = 22


def _map_plot(title: str) -> tuple[pg.PlotWidget, pg.ImageItem]:
    plot = pg.PlotWidget()  # colours: gui.theme (pyqtgraph config)
    plot.setMinimumWidth(60)  # two maps share a narrow column: let the splitter shrink them, not clip them
    plot.setLabel("bottom", "input block")
    plot.setLabel("left", "output channel")
    plot.invertY(True)  # channel 0 at the top, like the table
    plot.setAspectLocked(False)
    plot.setTitle(title, size="9pt")
    # Made once, updated in place with setImage; fixed 0–1 levels so colours mean the same everywhere.
    image = pg.ImageItem(axisOrder="row-major")
    plot.addItem(image)
    return plot, image


class HeatmapPanel(QWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.plot, self.image = _map_plot("")
        self.optimized_plot, self.optimized_image = _map_plot("optimized")
        self.optimized_plot.setToolTip("The same map for the optimized weights (latest comparison)")
        self.optimized_plot.setXLink(self.plot)
        self.optimized_plot.setYLink(self.plot)
        self.optimized_plot.setVisible(False)
        self.color_bar = pg.ColorBarItem(
            values=(0, 1),
            colorMap=pg.colormap.get("viridis"),
            interactive=False,
            label="zero fraction",
            width=12,
            orientation="horizontal",  # below the maps: two maps side by side leave no room beside them
        )
        self.color_bar.setImageItem(
            [self.image, self.optimized_image], insert_in=self.optimized_plot.getPlotItem()
        )
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot, 1)
        layout.addWidget(self.optimized_plot, 1)

    def show_stats(self, name: str, stats: LayerStats, optimized: LayerStats | None = None) -> None:
        # A short title: a long one sets the plot's minimum width and the two maps get clipped.
        self.plot.setTitle(f"Sparsity of {short_layer_name(name, TITLE_CHARS)}", size="9pt")
        self.plot.setToolTip(f"Zero fraction per output channel × input block of {name}")
        self.image.setImage(stats.sparsity_map, autoLevels=False, levels=(0.0, 1.0))
        same_grid = optimized is not None and optimized.sparsity_map.shape == stats.sparsity_map.shape
        self.optimized_plot.setTitle("optimized" if same_grid else "optimized (channels removed)", size="9pt")
        if optimized is not None:
            self.optimized_image.setImage(optimized.sparsity_map, autoLevels=False, levels=(0.0, 1.0))
        self.optimized_plot.setVisible(optimized is not None)
        self.plot.autoRange()

    def clear(self) -> None:
        self.plot.setTitle(None)
        self.image.setImage(_EMPTY, autoLevels=False, levels=(0.0, 1.0))
        self.optimized_image.setImage(_EMPTY, autoLevels=False, levels=(0.0, 1.0))
        self.optimized_plot.setVisible(False)
