"""`LayerTablePanel`: every layer of the open model in a sortable table with a filter box above it."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QLineEdit, QTableView, QVBoxLayout, QWidget

from slimscope.core.inspection import ModelReport
from slimscope.core.inspection_table import human_count
from slimscope.core.layers import Layer
from slimscope.core.stats import LayerStats

COLUMNS = ("name", "op", "shape", "params", "MACs", "sparsity", "min", "max")
SORT_ROLE = Qt.ItemDataRole.UserRole  # the raw value, so numbers sort as numbers
_Index = QModelIndex | QPersistentModelIndex


def _cells(layer: Layer, stats: LayerStats | None) -> list[tuple[str, Any]]:
    """(text shown, value sorted by) for each column."""
    op = f"{layer.op_type} dw" if layer.depthwise else layer.op_type
    macs = ("?", -1) if layer.macs is None else (human_count(layer.macs), layer.macs)
    cells: list[tuple[str, Any]] = [
        (layer.name, layer.name),
        (op, op),
        ("×".join(str(d) for d in layer.weight_shape), layer.weight_shape),
        (human_count(layer.params), layer.params),
        macs,
    ]
    if stats is None:
        return cells + [("", 0.0)] * 3
    return cells + [
        (f"{stats.sparsity:.1%}", stats.sparsity),
        (f"{stats.min:+.3g}", stats.min),
        (f"{stats.max:+.3g}", stats.max),
    ]


class LayerTableModel(QAbstractTableModel):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._rows: list[list[tuple[str, Any]]] = []
        self._names: list[str] = []

    def set_report(self, report: ModelReport) -> None:
        self.beginResetModel()
        self._rows = [_cells(layer, report.stats.get(layer.name)) for layer in report.layers]
        self._names = [layer.name for layer in report.layers]
        self.endResetModel()

    def layer_name(self, row: int) -> str:
        return self._names[row]

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008 (Qt's signature)
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        text, value = self._rows[index.row()][index.column()]
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return text
        if role == SORT_ROLE:
            return value if not isinstance(value, tuple) else list(value)
        if role == Qt.ItemDataRole.TextAlignmentRole and index.column() >= 3:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return COLUMNS[section]
        return None


class LayerTablePanel(QWidget):
    """Emits `layer_selected(name)` when the current row changes, `selection_changed(names)` when the
    selected rows change (Ctrl/Shift-click selects several)."""

    layer_selected = Signal(str)
    selection_changed = Signal(list)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.model = LayerTableModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.proxy.setFilterKeyColumn(0)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.filter_edit = QLineEdit(placeholderText="Filter layers by name…", clearButtonEnabled=True)
        self.filter_edit.setToolTip("Show only layers whose name contains this text")
        self.filter_edit.textChanged.connect(self.proxy.setFilterFixedString)
        self.view = QTableView(sortingEnabled=True)
        self.view.setModel(self.proxy)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.setWordWrap(False)
        self.view.verticalHeader().hide()
        self.view.verticalHeader().setDefaultSectionSize(self.view.fontMetrics().height() + 6)
        self.view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.view.selectionModel().currentRowChanged.connect(self._on_current_row)
        self.view.selectionModel().selectionChanged.connect(self._on_selection)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.filter_edit)
        layout.addWidget(self.view)

    def set_report(self, report: ModelReport) -> None:
        self.view.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # back to the model's own layer order
        self.model.set_report(report)
        if self.proxy.rowCount():
            self.select_row(0)

    def select_row(self, row: int) -> None:
        """Make the `row`-th visible row current (as a click would)."""
        self.view.selectRow(row)

    def select_layer(self, name: str) -> None:
        """Make the layer `name` current and scroll to it, clearing a filter that hides it."""
        found = self.model.match(
            self.model.index(0, 0), Qt.ItemDataRole.DisplayRole, name, 1, Qt.MatchFlag.MatchExactly
        )
        if not found:
            return
        if not self.proxy.mapFromSource(found[0]).isValid():
            self.filter_edit.clear()
        row = self.proxy.mapFromSource(found[0]).row()
        self.select_row(row)
        self.view.scrollTo(self.proxy.index(row, 0))

    def selected_names(self) -> list[str]:
        """Selected layers in the model's order."""
        rows = sorted(self.proxy.mapToSource(i).row() for i in self.view.selectionModel().selectedRows())
        return [self.model.layer_name(row) for row in rows]

    def visible_names(self) -> list[str]:
        return [self.proxy.index(row, 0).data() for row in range(self.proxy.rowCount())]

    def _on_current_row(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if current.isValid():
            self.layer_selected.emit(self.model.layer_name(self.proxy.mapToSource(current).row()))

    def _on_selection(self, *_args: object) -> None:
        self.selection_changed.emit(self.selected_names())
