"""The layer table's recipe settings and per-layer error columns: core's numbers as shown, coloured by how
bad they are, sorted as numbers, kept in step with the Session, and the important columns in view."""

import math
from dataclasses import replace

import pytest
from PySide6.QtCore import Qt

from slimscope.core.evaluate import LayerError
from slimscope.core.recipe import PruneSpec
from slimscope.gui.panels.layer_table import (
    COLUMNS,
    ERROR_COLUMN,
    FAIR_BACKGROUND,
    POOR_BACKGROUND,
    SETTINGS_COLUMN,
    LayerTableModel,
)
from slimscope.resources import DEMO_MODEL

COMPARISON_TIMEOUT = 60_000


def column_texts(table, column: int) -> list[str]:
    return [table.proxy.index(row, column).data() for row in range(table.proxy.rowCount())]


def shown_errors(table) -> dict[str, str]:
    return dict(zip(table.visible_names(), column_texts(table, ERROR_COLUMN), strict=True))


@pytest.fixture
def compared(window, open_and_wait, qtbot):
    """The demo open and its complete first comparison (with per-layer errors) in the Session."""
    open_and_wait(window, DEMO_MODEL)
    session = window.session
    qtbot.waitUntil(
        lambda: session.result_is_current and bool(session.result.report.layers), timeout=COMPARISON_TIMEOUT
    )
    return window


def test_error_column_shows_the_reports_sqnr_and_sorts_numerically(compared):
    table, report = compared.layer_table, compared.session.result.report
    expected = {e.name: "identical" if math.isinf(e.sqnr_db) else f"{e.sqnr_db:.1f}" for e in report.layers}
    assert shown_errors(table) == expected
    sqnr = {e.name: e.sqnr_db for e in report.layers}
    for row, name in enumerate(table.visible_names()):
        background = table.proxy.index(row, ERROR_COLUMN).data(Qt.ItemDataRole.BackgroundRole)
        wanted = POOR_BACKGROUND if sqnr[name] < 15 else FAIR_BACKGROUND if sqnr[name] < 25 else None
        assert background == wanted, name
    table.view.sortByColumn(ERROR_COLUMN, Qt.SortOrder.AscendingOrder)
    assert table.visible_names() == sorted(sqnr, key=sqnr.get)  # as numbers: "9.5" before "10.3"
    table.view.sortByColumn(ERROR_COLUMN, Qt.SortOrder.DescendingOrder)
    assert table.visible_names()[0] == max(sqnr, key=sqnr.get)
    header = table.model.headerData(ERROR_COLUMN, Qt.Orientation.Horizontal, Qt.ItemDataRole.ToolTipRole)
    assert "higher is better" in header


def test_errors_are_cleared_for_a_new_result_and_a_new_model(compared):
    table, session = compared.layer_table, compared.session
    result = session.result
    assert all(shown_errors(table).values())
    # A newer comparison's first delivery has headline numbers only: the old errors must not stay.
    session.set_result(replace(result, report=replace(result.report, layers=[])))
    assert set(shown_errors(table).values()) == {""}
    session.set_result(result)
    assert all(shown_errors(table).values())
    session.set_model(compared.report)  # the model changes: no comparison for it yet
    assert set(shown_errors(table).values()) == {""}


def test_settings_column_follows_recipe_edits(compared):
    table, session = compared.layer_table, compared.session
    assert set(column_texts(table, SETTINGS_COLUMN)) == {"50% · int8"}  # the demo's default recipe
    name = table.visible_names()[3]
    recipe = session.recipe.with_layer(name, prune=PruneSpec("channel", sparsity=0.25), quantize=None)
    compared.push_recipe(recipe, "Edit one layer")
    texts = dict(zip(table.visible_names(), column_texts(table, SETTINGS_COLUMN), strict=True))
    assert texts[name] == "25% ch"
    index = table.proxy.index(3, SETTINGS_COLUMN)
    assert index.data(Qt.ItemDataRole.FontRole).bold()
    assert "this layer's own settings" in index.data(Qt.ItemDataRole.ToolTipRole)
    assert table.proxy.index(2, SETTINGS_COLUMN).data(Qt.ItemDataRole.FontRole) is None
    compared.actions_by_key["undo"].trigger()
    assert column_texts(table, SETTINGS_COLUMN)[3] == "50% · int8"


def test_important_columns_are_in_view_at_the_default_size(compared, qtbot):
    compared.resize(1500, 900)
    table = compared.layer_table
    table.set_report(compared.report)  # the name column is fitted per model, at the current width
    view, header = table.view, table.view.horizontalHeader()
    for name in ("name", "op", "params", "MACs", "sparsity", "settings", "error dB"):
        column = COLUMNS.index(name)
        right = header.sectionViewportPosition(column) + header.sectionSize(column)
        assert right <= view.viewport().width(), name
        assert header.sectionSize(column) >= view.sizeHintForColumn(column) or name == "name", name
    assert header.sectionSize(0) >= 140


def test_unmeasured_and_identical_layers(demo_report):
    model = LayerTableModel()
    model.set_report(demo_report)
    names = [layer.name for layer in demo_report.layers]
    errors = [
        LayerError(names[0], "t0", 30.0),
        LayerError(names[1], "t1", math.inf),
        LayerError(names[2], "t2", None, "the output was folded away"),
        LayerError(names[3], "t3", 9.5),
    ]
    model.set_layer_errors(errors)
    cell = [model.index(row, ERROR_COLUMN) for row in range(5)]
    assert [index.data() for index in cell] == ["30.0", "identical", "", "9.5", ""]
    assert cell[2].data(Qt.ItemDataRole.ToolTipRole) == "Not measured: the output was folded away"
    assert cell[3].data(Qt.ItemDataRole.BackgroundRole) == POOR_BACKGROUND
    keys = [index.data(Qt.ItemDataRole.UserRole) for index in cell]
    # Ascending: worst first, then identical, then the unmeasured ones.
    assert sorted(range(5), key=keys.__getitem__)[:3] == [3, 0, 1]
