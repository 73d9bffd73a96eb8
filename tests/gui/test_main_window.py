"""The main window over real core results: open the demo, select layers, filter, fail, remember."""

import numpy as np
from PySide6.QtCore import Qt

from slimscope.core.inspection_table import short_layer_name
from slimscope.gui import settings
from slimscope.gui.panels.heatmap_panel import TITLE_CHARS
from slimscope.gui.panels.layer_table import COLUMNS
from slimscope.resources import DEMO_MODEL


def test_demo_model_fills_the_table(qtbot, open_and_wait, window, demo_report, error_calls):
    open_and_wait(window, DEMO_MODEL)
    assert window.layer_table.model.rowCount() == 17
    assert window.layer_table.visible_names() == [layer.name for layer in demo_report.layers]
    assert error_calls == []
    assert not window.job_progress.isVisible()


def test_selecting_a_layer_shows_its_histogram_and_sparsity_map(qtbot, open_and_wait, window, demo_report):
    open_and_wait(window, DEMO_MODEL)
    for row in (4, 16):
        window.layer_table.select_row(row)
        name = demo_report.layers[row].name
        expected = demo_report.stats[name]
        np.testing.assert_array_equal(window.histogram.curve.yData, expected.histogram_counts)
        np.testing.assert_array_equal(window.histogram.curve.xData, expected.histogram_edges)
        np.testing.assert_array_equal(window.heatmap.image.image, expected.sparsity_map)
        assert short_layer_name(name, TITLE_CHARS) in window.heatmap.plot.getPlotItem().titleLabel.text
        assert name in window.heatmap.plot.toolTip()


def test_log_counts_keeps_the_data(qtbot, open_and_wait, window, demo_report):
    open_and_wait(window, DEMO_MODEL)
    window.layer_table.select_row(2)
    window.histogram.log_counts.setChecked(True)
    assert window.histogram.plot.getPlotItem().ctrl.logYCheck.isChecked()
    expected = demo_report.stats[demo_report.layers[2].name].histogram_counts
    np.testing.assert_array_equal(window.histogram.curve.yData, expected)


def test_filter_box_filters_rows(qtbot, open_and_wait, window, demo_report):
    open_and_wait(window, DEMO_MODEL)
    window.layer_table.filter_edit.setText("DEPTHWISE")
    names = window.layer_table.visible_names()
    assert names == [layer.name for layer in demo_report.layers if "depthwise" in layer.name]
    assert len(names) == 7
    window.layer_table.filter_edit.clear()
    assert len(window.layer_table.visible_names()) == 17


def test_sorting_by_params_sorts_numbers(qtbot, open_and_wait, window, demo_report):
    open_and_wait(window, DEMO_MODEL)
    window.layer_table.view.sortByColumn(COLUMNS.index("params"), Qt.SortOrder.DescendingOrder)
    assert window.layer_table.visible_names()[0] == max(demo_report.layers, key=lambda la: la.params).name


def test_broken_file_goes_to_the_funnel_and_keeps_the_open_model(
    qtbot, open_and_wait, window, error_calls, tmp_path
):
    from slimscope.core.errors import ModelLoadError

    open_and_wait(window, DEMO_MODEL)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    open_and_wait(window, bad)
    assert len(error_calls) == 1 and isinstance(error_calls[0], ModelLoadError)
    assert window.layer_table.model.rowCount() == 17
    assert window.model_path == DEMO_MODEL
    assert settings.recent_files() == [DEMO_MODEL.resolve()]


def test_recent_files_are_recorded_and_listed(qtbot, open_and_wait, window):
    assert settings.recent_files() == []
    assert not window.recent_menu.isEnabled()
    open_and_wait(window, DEMO_MODEL)
    assert settings.recent_files() == [DEMO_MODEL.resolve()]
    texts = [a.text() for a in window.recent_menu.actions()]
    assert texts[0] == DEMO_MODEL.name and window.recent_menu.isEnabled()


def test_recent_files_keep_ten_newest_first(tmp_path):
    paths = [tmp_path / f"m{i}.onnx" for i in range(12)]
    for path in paths:
        settings.add_recent_file(path)
    settings.add_recent_file(paths[5])
    recent = settings.recent_files()
    assert len(recent) == settings.MAX_RECENT_FILES
    assert recent[:3] == [paths[5].resolve(), paths[11].resolve(), paths[10].resolve()]


def test_a_newer_request_drops_the_older_result(qtbot, open_and_wait, window, error_calls, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    window.open_model(bad)  # superseded at once: its error must never reach the funnel
    open_and_wait(window, DEMO_MODEL)
    qtbot.wait(200)
    assert error_calls == []
    assert window.layer_table.model.rowCount() == 17


def test_cancel_hides_progress_and_keeps_the_table_empty(qtbot, open_and_wait, window):
    window.open_model(DEMO_MODEL)
    assert window.job_progress.isVisible()
    window.job_progress.cancel_button.click()
    assert not window.job_progress.isVisible()
    qtbot.wait(1500)
    assert window.layer_table.model.rowCount() == 0


def test_actions_have_standard_shortcuts(window):
    from PySide6.QtGui import QKeySequence

    actions = window.actions_by_key
    assert actions["open"].shortcut() == QKeySequence(QKeySequence.StandardKey.Open)
    assert actions["quit"].shortcut() == QKeySequence(QKeySequence.StandardKey.Quit)


def test_about_lists_library_versions():
    from importlib import metadata

    from slimscope.gui.actions import library_versions

    versions = library_versions()
    assert versions["onnx"] == metadata.version("onnx")
    assert versions["onnxruntime"] == metadata.version("onnxruntime")
    assert versions["torch"] == metadata.version("torch")


def test_window_geometry_and_splitters_persist(qtbot, error_calls):
    from slimscope.gui.main_window import MainWindow

    first = MainWindow()
    qtbot.addWidget(first)
    first.show()
    first.resize(640, 480)  # inside the offscreen screen, which clamps larger windows
    first.splitters["main"].setSizes([200, 250, 190])
    wanted, size = first.splitters["main"].sizes(), (first.width(), first.height())
    first.close()

    second = MainWindow()
    qtbot.addWidget(second)
    second.show()
    assert (second.width(), second.height()) == size
    assert second.splitters["main"].sizes() == wanted
    second.close()
