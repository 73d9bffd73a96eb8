"""The whole-model charts: per-layer parameters/MACs/bytes and per-layer error bars show core's numbers, in
the promised order and colours, and clicking a bar selects that layer in the table."""

import math
from dataclasses import replace

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QToolTip

from slimscope.core.comparison import Comparison
from slimscope.core.data import fit_to_model, load_dataset
from slimscope.core.evaluate import iter_evaluate, layer_tensors
from slimscope.core.optimize import iter_optimize
from slimscope.core.recipe_presets import DEMO_PRESET, preset_recipe
from slimscope.core.session import Session
from slimscope.core.tasks import run_sync
from slimscope.gui.panels.layer_bar_chart import LayerBarChart, short_name
from slimscope.gui.panels.layer_error_panel import EMPTY_TEXT, LayerErrorPanel
from slimscope.gui.panels.overview_panel import OverviewPanel
from slimscope.resources import DEMO_CALIBRATION, DEMO_DATA, DEMO_MODEL


@pytest.fixture(scope="session")
def demo_comparison(demo_report):
    """The demo's initial recipe (its preset, with pruning) applied by core, evaluated with per-layer errors."""
    loaded = demo_report.loaded
    recipe = preset_recipe(DEMO_PRESET, [layer.name for layer in demo_report.layers])
    calib = fit_to_model(load_dataset(DEMO_CALIBRATION), loaded.model)
    optimized = run_sync(iter_optimize(loaded, recipe, calib.x))
    data = fit_to_model(load_dataset(DEMO_DATA, limit=64), loaded.model)
    report = run_sync(
        iter_evaluate(
            loaded.model, optimized.model, data, latency=False, per_layer=layer_tensors(loaded.model)
        )
    )
    return Comparison(recipe, optimized, report)


@pytest.fixture
def session(demo_report):
    session = Session()
    session.set_model(demo_report)
    return session


def click_bar(qtbot, chart: LayerBarChart, row: int) -> None:
    """A real left click on the middle of a bar."""
    point = chart.mapFromScene(chart.scene_pos_of(row))
    QTest.mouseClick(chart.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier, point)


def bar_brushes(chart: LayerBarChart) -> list:
    return [brush.color().getRgb() for brush in chart.bars.opts["brushes"]]


# ---------------------------------------------------------------- overview


def test_overview_bars_are_core_params_then_macs_then_bytes(qtbot, session, demo_report):
    panel = OverviewPanel(session)  # created after the model opened: it reads the session at once
    qtbot.addWidget(panel)
    names = [layer.name for layer in demo_report.layers]
    assert panel.chart.names == names
    assert panel.chart.values.tolist() == [layer.params for layer in demo_report.layers]
    panel.quantity.setCurrentText("MACs")
    assert panel.chart.values.tolist() == [layer.macs for layer in demo_report.layers]
    assert panel.chart.values.tolist() != [layer.params for layer in demo_report.layers]
    panel.quantity.setCurrentText("weight bytes")
    # Every initializer of the demo is a layer's weight or bias, so the bars add up to core's total.
    assert sum(panel.chart.values) == demo_report.weight_bytes
    assert "MACs" in panel.quantity.itemText(1)


def test_overview_follows_the_session(qtbot, demo_report):
    session = Session()
    panel = OverviewPanel(session)
    qtbot.addWidget(panel)
    assert panel.chart.names == [] and "No model" in panel.summary.text()
    session.set_model(demo_report)
    assert len(panel.chart.names) == len(demo_report.layers)


def test_overview_sorts_and_heavy_layers_stand_out(qtbot, session, demo_report):
    panel = OverviewPanel(session)
    qtbot.addWidget(panel)
    panel.sort_by_size.setChecked(True)
    values = panel.chart.values.tolist()
    assert values == sorted(values, reverse=True)
    heaviest = max(demo_report.layers, key=lambda layer: layer.params)
    assert panel.chart.names[0] == heaviest.name
    red, green, blue, _ = bar_brushes(panel.chart)[0]
    assert red > 150 and red > 3 * blue  # the largest share is drawn red
    light = bar_brushes(panel.chart)[-1]
    assert light[2] > light[0]  # a tiny share stays pale blue
    share = heaviest.params / sum(layer.params for layer in demo_report.layers)
    assert f"{share:.1%}" in panel.chart.tooltips[0] and heaviest.name in panel.chart.tooltips[0]
    assert heaviest.name in panel.summary.text()
    panel.sort_by_size.setChecked(False)
    assert panel.chart.names == [layer.name for layer in demo_report.layers]


def test_unknown_macs_are_zero_bars_and_say_so(qtbot, demo_report):
    layers = [replace(layer, macs=None) if i == 2 else layer for i, layer in enumerate(demo_report.layers)]
    session = Session()
    session.set_model(replace(demo_report, layers=layers, macs=None))
    panel = OverviewPanel(session)
    qtbot.addWidget(panel)
    panel.quantity.setCurrentText("MACs")
    assert panel.chart.values[2] == 0
    assert "unknown" in panel.chart.tooltips[2] and "shown as 0" in panel.chart.tooltips[2]
    assert "1 layer unknown" in panel.summary.text()


def test_hovering_a_bar_shows_its_tooltip(qtbot, session, demo_report):
    panel = OverviewPanel(session)
    qtbot.addWidget(panel)
    panel.resize(500, 600)
    panel.show()
    qtbot.waitExposed(panel)
    panel.chart._on_mouse_moved(panel.chart.scene_pos_of(3))  # what the scene's mouse-move signal calls
    assert QToolTip.text() == panel.chart.tooltips[3]
    assert demo_report.layers[3].name in QToolTip.text()


def test_long_names_are_shortened_on_the_axis():
    assert short_name("/blocks/blocks.3/pointwise/pointwise.0/Conv") == "/blocks.3/pointwise.0/Conv"
    assert short_name("/classifier/Gemm") == "/classifier/Gemm"
    long = "x" * 100
    assert short_name(long).startswith("…") and len(short_name(long)) == 34


def test_clicking_an_overview_bar_selects_the_layer(window, open_and_wait, qtbot):
    open_and_wait(window, DEMO_MODEL)
    window.views.setCurrentWidget(window.overview)
    chart = window.overview.chart
    window.layer_table.filter_edit.setText("classifier")  # the clicked layer is hidden by the filter
    qtbot.waitUntil(lambda: chart.getViewBox().sceneBoundingRect().contains(chart.scene_pos_of(5)))
    click_bar(qtbot, chart, 5)
    assert window.layer_table.selected_names() == [chart.names[5]]
    assert window.layer_table.filter_edit.text() == ""
    assert chart.names[5] in window.histogram.plot.plotItem.titleLabel.text  # the layer's plots follow


# ---------------------------------------------------------------- per-layer error


def test_error_bars_are_core_sqnrs_worst_first(qtbot, session, demo_comparison):
    panel = LayerErrorPanel(session)
    qtbot.addWidget(panel)
    assert panel.status.text() == EMPTY_TEXT and panel.chart.names == []
    session.set_result(demo_comparison)
    measured = {error.name: error.sqnr_db for error in demo_comparison.report.layers}
    assert len(measured) == len(session.layer_names) and all(math.isfinite(v) for v in measured.values())
    assert sorted(panel.chart.names) == sorted(measured)
    assert panel.chart.values.tolist() == [measured[name] for name in panel.chart.names]
    assert panel.chart.values.tolist() == sorted(measured.values())  # worst first
    worst, best = bar_brushes(panel.chart)[0], bar_brushes(panel.chart)[-1]
    assert worst[0] > worst[1] and best[1] > best[0]  # red for the worst layer, green for the best
    assert f"{panel.chart.values[0]:.1f} dB" in panel.chart.tooltips[0]
    assert "no per-layer" not in panel.status.text().lower()
    session.set_result(None)
    assert panel.status.text() == EMPTY_TEXT and panel.chart.names == []


def test_identical_and_unmeasured_layers(qtbot, session, demo_comparison):
    layers = list(demo_comparison.report.layers)
    layers[0] = replace(layers[0], sqnr_db=math.inf)
    layers[1] = replace(layers[1], sqnr_db=None, note="shape [1, 8] in the optimized model")
    report = replace(demo_comparison.report, layers=tuple(layers))
    session.set_result(replace(demo_comparison, report=report))
    panel = LayerErrorPanel(session)  # created after the result: it reads the session at once
    qtbot.addWidget(panel)
    identical = panel.chart.names.index(layers[0].name)
    unmeasured = panel.chart.names.index(layers[1].name)
    assert unmeasured == len(layers) - 1 and identical == len(layers) - 2  # after every measured layer
    assert panel.chart.values[identical] == max(panel.chart.values)  # a capped bar
    assert "identical" in panel.chart.tooltips[identical]
    assert panel.chart.values[unmeasured] == 0  # no bar
    assert "shape [1, 8]" in panel.chart.tooltips[unmeasured]


def test_no_layer_errors_measured_is_said(qtbot, session, demo_comparison):
    report = replace(demo_comparison.report, layers=())
    session.set_result(replace(demo_comparison, report=report))
    panel = LayerErrorPanel(session)
    qtbot.addWidget(panel)
    assert "no per-layer errors measured yet" in panel.status.text().lower()
    assert panel.chart.names == []


def test_clicking_an_error_bar_selects_the_layer(window, open_and_wait, qtbot, demo_comparison):
    open_and_wait(window, DEMO_MODEL)
    window.live.cancel()  # the live comparison must not replace the result set here
    assert window.session.recipe == demo_comparison.recipe
    window.session.set_result(demo_comparison)
    window.views.setCurrentWidget(window.layer_errors)
    chart = window.layer_errors.chart
    assert chart.names[0] == min(demo_comparison.report.layers, key=lambda e: e.sqnr_db).name
    qtbot.waitUntil(lambda: chart.getViewBox().sceneBoundingRect().contains(chart.scene_pos_of(0)))
    with qtbot.waitSignal(window.layer_errors.layer_clicked) as clicked:
        click_bar(qtbot, chart, 0)
    assert clicked.args == [chart.names[0]]
    assert window.layer_table.selected_names() == [chart.names[0]]
