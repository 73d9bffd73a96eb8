"""`LayerTablePanel`: every layer of the open model in a sortable table with a filter box above it: what
core's inspection says of it, the settings the recipe gives it, and its error in the latest comparison."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtGui import QColor, QFont
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QLineEdit, QTableView, QVBoxLayout, QWidget

from slimscope.core.comparison import Comparison
from slimscope.core.evaluate import LayerError
from slimscope.core.inspection import ModelReport
from slimscope.core.inspection_table import human_count, short_layer_name
from slimscope.core.layers import Layer
from slimscope.core.recipe import LayerOverride, LayerSettings, Recipe
from slimscope.core.sensitivity import SensitivityRow
from slimscope.core.session import Session
from slimscope.core.stats import LayerStats

# The columns worth seeing at once come first; shape and the weight range are a scroll away.
COLUMNS = (
    "name", "op", "params", "MACs", "sparsity", "settings", "error dB", "sensitivity", "shape", "min", "max",
)  # fmt: skip
HEADER_TOOLTIPS = {
    "name": "The layer's node name in the graph",
    "op": "Operator type; dw: depthwise convolution",
    "params": "Weights and biases of the layer",
    "MACs": "Multiply-accumulates per inference (?: the model leaves its input size open; give one with Data → "
    "Input Size…, or choose evaluation data)",
    "sparsity": "Share of the layer's weights that are zero now",
    "settings": "What the recipe does to this layer: share of weights pruned (ch: whole channels) and weight "
    "bits; bold: the layer's own settings rather than the defaults",
    "error dB": "Output SQNR of this layer in the latest comparison; higher is better",
    "sensitivity": "What the setting chosen in the Sensitivity tab costs when applied to this layer alone: "
    "the drop in accuracy or agreement (points), or output SQNR (dB) for a model that is not a classifier; "
    "ascending sort puts the most sensitive layers first",
    "shape": "Shape of the weight tensor",
    "min": "Smallest weight",
    "max": "Largest weight",
}
SETTINGS_COLUMN, ERROR_COLUMN = COLUMNS.index("settings"), COLUMNS.index("error dB")
MACS_COLUMN = COLUMNS.index("MACs")
SENSITIVITY_COLUMN = COLUMNS.index("sensitivity")
TEXT_COLUMNS = {COLUMNS.index(name) for name in ("name", "op", "settings", "shape")}  # the rest: numbers
MIN_NAME_WIDTH = 140  # pixels: a narrower table scrolls sideways rather than cut names to nothing
SORT_ROLE = Qt.ItemDataRole.UserRole  # the raw value, so numbers sort as numbers
# Error backgrounds: translucent, so that the text stays readable on a light and on a dark base.
POOR_DB, FAIR_DB = 15.0, 25.0
POOR_BACKGROUND, FAIR_BACKGROUND = QColor(220, 50, 47, 110), QColor(240, 170, 40, 100)
POOR_DROP_PT, FAIR_DROP_PT = 2.0, 0.5  # a layer alone costing this many points (or more) is red, amber
# Sort keys that keep error sorting numeric: an identical layer ranks above every measured one, and
# an unmeasured layer (or no comparison yet) after all of them.
IDENTICAL_KEY, UNMEASURED_KEY = sys.float_info.max, math.inf
_Index = QModelIndex | QPersistentModelIndex


def _cells(layer: Layer, stats: LayerStats | None) -> list[tuple[str, Any]]:
    """(text shown, value sorted by) for each column."""
    op = f"{layer.op_type} dw" if layer.depthwise else layer.op_type
    macs = macs_cell(layer)
    shape = ("×".join(str(d) for d in layer.weight_shape), layer.weight_shape)
    if stats is None:
        sparsity = low = high = ("", 0.0)
    else:
        sparsity = (f"{stats.sparsity:.1%}", stats.sparsity)
        low, high = (f"{stats.min:+.3g}", stats.min), (f"{stats.max:+.3g}", stats.max)
    settings, error = ("", ""), ("", UNMEASURED_KEY)  # filled by set_recipe and set_layer_errors
    sensitivity = ("", UNMEASURED_KEY)  # filled by set_sensitivity
    name, params = (short_layer_name(layer.name), layer.name), (human_count(layer.params), layer.params)
    return [name, (op, op), params, macs, sparsity, settings, error, sensitivity, shape, low, high]


def macs_cell(layer: Layer) -> tuple[str, int]:
    return ("?", -1) if layer.macs is None else (human_count(layer.macs), layer.macs)


def _macs_for(report: ModelReport) -> str:
    sizes = ", ".join(f"{k} {'×'.join(map(str, v))}" for k, v in (report.shape_used or {}).items())
    return f"Counted for {sizes}" if sizes else ""


def settings_text(settings: LayerSettings) -> str:
    """Short: "50% · int8", "2:4 · int4", "40% ch", "none"."""
    parts = []
    prune = settings.prune
    if prune is not None:
        if prune.n is not None:
            amount = prune.structure
        elif prune.sparsity is not None:
            amount = f"{prune.sparsity:.0%}" + (" ch" if prune.structure == "channel" else "")
        else:
            amount = f"|w|<{prune.threshold:g}"
        parts.append(amount)
    if settings.quantize is not None:
        parts.append(f"int{settings.quantize.weight_bits}")
    return " · ".join(parts) or "none"


def settings_tooltip(settings: LayerSettings, own: bool) -> str:
    prune, quant = settings.prune, settings.quantize
    if prune is None:
        pruned = "not pruned"
    else:
        amount = (
            f"{prune.sparsity:.0%} of weights" if prune.sparsity is not None else f"|w| < {prune.threshold:g}"
        )
        pruned = f"pruned: {amount}, {prune.structure}, {prune.scope} scope"
    quantized = "not quantized"
    if quant is not None:
        quantized = f"quantized: int{quant.weight_bits} weights ({quant.granularity}), "
        quantized += f"int{quant.activation_bits} activations"
    return "\n".join([pruned, quantized, "this layer's own settings" if own else "the recipe's defaults"])


def error_cell(error: LayerError | None) -> tuple[str, float, str]:
    """(text, sort key, tooltip) of a layer's error: SQNR in dB to one decimal, "identical", or nothing
    (the tooltip then says why it was not measured)."""
    if error is None:
        return "", UNMEASURED_KEY, "Not in the latest comparison"
    if error.sqnr_db is None:
        return "", UNMEASURED_KEY, f"Not measured: {error.note or 'no comparable output'}"
    if math.isinf(error.sqnr_db):
        return "identical", IDENTICAL_KEY, "The output is identical to the original's"
    return f"{error.sqnr_db:.1f}", error.sqnr_db, f"Output SQNR {error.sqnr_db:.2f} dB ({error.tensor})"


def error_background(sqnr_db: float | None) -> QColor | None:
    """Red for a poor layer, amber for a fair one, nothing for a good (or unmeasured) one."""
    if sqnr_db is None or math.isnan(sqnr_db):
        return None
    if sqnr_db < POOR_DB:
        return POOR_BACKGROUND
    return FAIR_BACKGROUND if sqnr_db < FAIR_DB else None


def sensitivity_cell(row: SensitivityRow | None) -> tuple[str, float, str]:
    """(text, sort key, tooltip) of a layer's sensitivity: the drop in points ("0.4 pt"), or the output
    SQNR when the model is not a classifier. Sort keys ascend from the most sensitive layer (largest drop,
    lowest SQNR); layers not probed, or the setting not applicable to them, sort last."""
    if row is None:
        return "", UNMEASURED_KEY, "Not probed (run a sweep in the Sensitivity tab)"
    if not row.applied:
        return "n/a", UNMEASURED_KEY, f"{row.setting}: {row.note or 'does not apply to this layer'}"
    on = f"{row.setting} on this layer alone, {row.samples} samples"
    if row.drop is not None:
        return f"{100 * row.drop:.1f} pt", -row.drop, f"{on}: drop {100 * row.drop:.2f} points"
    if row.sqnr_db is None:
        return "", UNMEASURED_KEY, f"{on}: not measured"
    if math.isinf(row.sqnr_db):
        return "identical", IDENTICAL_KEY, f"{on}: the outputs are unchanged"
    return f"{row.sqnr_db:.1f} dB", row.sqnr_db, f"{on}: output SQNR {row.sqnr_db:.2f} dB"


def sensitivity_background(row: SensitivityRow | None) -> QColor | None:
    """Red for a layer whose drop alone is large, amber for a medium one; by SQNR like the error column
    when the model is not a classifier."""
    if row is None or not row.applied:
        return None
    if row.drop is None:
        return error_background(row.sqnr_db)
    points = 100 * row.drop
    if points >= POOR_DROP_PT:
        return POOR_BACKGROUND
    return FAIR_BACKGROUND if points >= FAIR_DROP_PT else None


class LayerTableModel(QAbstractTableModel):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._rows: list[list[tuple[str, Any]]] = []
        self._names: list[str] = []
        self._tooltips: dict[tuple[int, int], str] = {}  # (row, column) → tooltip when not the text
        self._backgrounds: dict[tuple[int, int], QColor] = {}  # (row, column) → background
        self._own_settings: set[int] = set()  # rows whose recipe entry overrides the defaults
        self._macs_for = ""  # the input size MACs are counted at, for the column's tooltip

    def set_report(self, report: ModelReport) -> None:
        """A new model: its layers, with no settings or errors until they are given."""
        self.beginResetModel()
        self._rows = [_cells(layer, report.stats.get(layer.name)) for layer in report.layers]
        self._names = [layer.name for layer in report.layers]
        self._macs_for = _macs_for(report)
        self._tooltips.clear()
        self._backgrounds.clear()
        self._own_settings.clear()
        self.endResetModel()

    def set_macs(self, report: ModelReport) -> None:
        """The same layers measured again (MACs at another input size): only the MACs column changes."""
        macs = {layer.name: macs_cell(layer) for layer in report.layers}
        for row, name in enumerate(self._names):
            self._set_cell(row, MACS_COLUMN, macs.get(name, ("?", -1)), None)
        self._macs_for = _macs_for(report)
        self._column_changed(MACS_COLUMN)

    def set_recipe(self, recipe: Recipe | None) -> None:
        """Each layer's settings from the recipe (empty without one)."""
        self._own_settings.clear()
        for row, name in enumerate(self._names):
            if recipe is None:
                self._set_cell(row, SETTINGS_COLUMN, ("", ""), None)
                continue
            settings = recipe.settings_for(name)
            own = recipe.override_for(name) not in (None, LayerOverride())
            if own:
                self._own_settings.add(row)
            text = settings_text(settings)
            self._set_cell(row, SETTINGS_COLUMN, (text, text), settings_tooltip(settings, own))
        self._column_changed(SETTINGS_COLUMN)

    def set_layer_errors(self, errors: Iterable[LayerError]) -> None:
        """The per-layer errors of a comparison; layers it does not name are left blank."""
        by_name = {error.name: error for error in errors}
        for row, name in enumerate(self._names):
            error = by_name.get(name)
            text, key, tooltip = error_cell(error)
            self._set_cell(row, ERROR_COLUMN, (text, key), tooltip)
            self._set_background(
                row, ERROR_COLUMN, error_background(None if error is None else error.sqnr_db)
            )
        self._column_changed(ERROR_COLUMN)

    def set_sensitivity(self, rows: Mapping[str, SensitivityRow]) -> None:
        """Each layer's sensitivity to one setting (layer name → row); layers it does not name are blank."""
        for row, name in enumerate(self._names):
            found = rows.get(name)
            text, key, tooltip = sensitivity_cell(found)
            self._set_cell(row, SENSITIVITY_COLUMN, (text, key), tooltip)
            self._set_background(row, SENSITIVITY_COLUMN, sensitivity_background(found))
        self._column_changed(SENSITIVITY_COLUMN)

    def _set_background(self, row: int, column: int, color: QColor | None) -> None:
        if color is None:
            self._backgrounds.pop((row, column), None)
        else:
            self._backgrounds[(row, column)] = color

    def _set_cell(self, row: int, column: int, cell: tuple[str, Any], tooltip: str | None) -> None:
        self._rows[row][column] = cell
        if tooltip is None:
            self._tooltips.pop((row, column), None)
        else:
            self._tooltips[(row, column)] = tooltip

    def _column_changed(self, column: int) -> None:
        if self._rows:
            self.dataChanged.emit(self.index(0, column), self.index(len(self._rows) - 1, column))

    def layer_name(self, row: int) -> str:
        return self._names[row]

    def rowCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008 (Qt's signature)
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: _Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row, column = index.row(), index.column()
        text, value = self._rows[row][column]
        if role == Qt.ItemDataRole.DisplayRole:
            return text
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltips.get((row, column), value if column == 0 else text)  # the full layer name
        if role == SORT_ROLE:
            return value if not isinstance(value, tuple) else list(value)
        if role == Qt.ItemDataRole.TextAlignmentRole and column not in TEXT_COLUMNS:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.BackgroundRole:
            return self._backgrounds.get((row, column))
        if role == Qt.ItemDataRole.FontRole and column == SETTINGS_COLUMN and row in self._own_settings:
            font = QFont()
            font.setBold(True)
            return font
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if orientation != Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            note = f"\n{self._macs_for}" if section == MACS_COLUMN and self._macs_for else ""
            return HEADER_TOOLTIPS[COLUMNS[section]] + note
        return None


class LayerTablePanel(QWidget):
    """Emits `layer_selected(name)` when the current row changes, `selection_changed(names)` when the
    selected rows change (Ctrl/Shift-click selects several). With a Session it shows the recipe's settings
    and the latest comparison's per-layer errors, kept in step through the Session's signals."""

    layer_selected = Signal(str)
    selection_changed = Signal(list)

    def __init__(self, session: Session | None = None, parent=None) -> None:
        super().__init__(parent)
        self.session = session
        self.model = LayerTableModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.proxy.setFilterKeyColumn(0)
        self.proxy.setFilterRole(SORT_ROLE)  # the full layer name, not the shortened one shown
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.filter_edit = QLineEdit(placeholderText="Filter layers by name…", clearButtonEnabled=True)
        self.filter_edit.setToolTip("Show only layers whose name contains this text")
        self.filter_edit.textChanged.connect(self.proxy.setFilterFixedString)
        self.view = QTableView(sortingEnabled=True)
        self.view.setModel(self.proxy)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.view.setWordWrap(False)
        self.view.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # a long name keeps its start and its op
        self.view.verticalHeader().hide()
        self.view.verticalHeader().setDefaultSectionSize(self.view.fontMetrics().height() + 6)
        header = self.view.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)  # sized in _fit_name_column
        header.setHighlightSections(False)
        self.view.selectionModel().currentRowChanged.connect(self._on_current_row)
        self.view.selectionModel().selectionChanged.connect(self._on_selection)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.filter_edit)
        layout.addWidget(self.view)
        if session is not None:
            session.recipe_changed.connect(self.model.set_recipe)
            session.result_changed.connect(self.show_result)
            session.report_changed.connect(self.model.set_macs)

    def set_report(self, report: ModelReport) -> None:
        self.view.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # back to the model's own layer order
        self.model.set_report(report)
        if self.session is not None and self.session.report is report:
            self.model.set_recipe(self.session.recipe)
            self.show_result(self.session.result)
        self._fit_name_column()
        if self.proxy.rowCount():
            self.select_row(0)

    def show_result(self, result: Comparison | None) -> None:
        """The per-layer errors of `result` (the headline-only first delivery has none yet)."""
        self.model.set_layer_errors(() if result is None else result.report.layers)

    def set_sensitivity(self, rows: Mapping[str, SensitivityRow]) -> None:
        """The sensitivity column: each layer's row of the setting shown in the Sensitivity tab."""
        self.model.set_sensitivity(rows)

    def _fit_name_column(self) -> None:
        """Names as wide as they are, but leaving room for the columns up to the error (longer names are
        cut in the middle); done per model, then the column is the user's to drag."""
        self.view.resizeColumnsToContents()  # now, not at the next layout pass
        header = self.view.horizontalHeader()
        others = sum(header.sectionSize(column) for column in range(1, ERROR_COLUMN + 1))
        room = self.view.viewport().width() - others - 2
        header.resizeSection(0, min(self.view.sizeHintForColumn(0), max(MIN_NAME_WIDTH, room)))

    def select_row(self, row: int) -> None:
        """Make the `row`-th visible row current (as a click would)."""
        self.view.selectRow(row)

    def select_layer(self, name: str) -> None:
        """Make the layer `name` current and scroll to it, clearing a filter that hides it."""
        found = self.model.match(self.model.index(0, 0), SORT_ROLE, name, 1, Qt.MatchFlag.MatchExactly)
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
        return [self.proxy.index(row, 0).data(SORT_ROLE) for row in range(self.proxy.rowCount())]

    def _on_current_row(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if current.isValid():
            self.layer_selected.emit(self.model.layer_name(self.proxy.mapToSource(current).row()))

    def _on_selection(self, *_args: object) -> None:
        self.selection_changed.emit(self.selected_names())
