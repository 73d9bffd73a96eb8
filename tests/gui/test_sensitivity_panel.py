"""The Sensitivity tab over real sweeps of the demo model in the analysis process: the chart fills as partial
reports stream in and ends equal to core's complete report, worst first; the layer table's column shows the
same drops, coloured; Cancel ends the job cleanly and leaves the process ready for the next sweep."""

import numpy as np
import pytest
from PySide6.QtCore import Qt

from slimscope.gui.panels.layer_table import FAIR_BACKGROUND, POOR_BACKGROUND, SENSITIVITY_COLUMN
from slimscope.resources import DEMO_MODEL

SWEEP_TIMEOUT = 60_000
SAMPLES = 128  # few samples: the sweeps stay a few seconds


def column(table, role=Qt.ItemDataRole.DisplayRole) -> dict:
    proxy = table.proxy
    return {
        proxy.index(row, 0).data(Qt.ItemDataRole.UserRole): proxy.index(row, SENSITIVITY_COLUMN).data(role)
        for row in range(proxy.rowCount())
    }


def start(window, qtbot, open_and_wait, settings):
    open_and_wait(window, DEMO_MODEL)
    panel = window.sensitivity
    assert panel.checked_settings() == ["int8", "int4"]  # the defaults
    panel.set_checked(settings)
    panel.max_samples = SAMPLES
    reports, drawn = [], []
    window.analysis.report_changed.connect(reports.append)
    panel.rows_shown.connect(lambda rows: drawn.append(len(rows)))
    panel.run_button.click()
    assert panel.running and panel.cancel_button.isEnabled() and not panel.run_button.isEnabled()
    return panel, reports, drawn


def test_the_chart_fills_as_results_stream_and_the_table_shows_the_drops(
    qtbot, open_and_wait, window, error_calls
):
    panel, reports, drawn = start(window, qtbot, open_and_wait, ["sparse80"])
    qtbot.waitUntil(lambda: panel.report is not None and panel.report.complete, timeout=SWEEP_TIMEOUT)
    qtbot.waitUntil(lambda: not panel.running)
    partial = [report for report in reports if not report.complete]
    assert len({len(report.rows) for report in partial}) > 1  # several partial reports, growing
    assert any(0 < count < 17 for count in drawn)  # the chart showed an unfinished sweep
    final = reports[-1]
    assert final.complete and panel.report is final and final.metric == "accuracy"
    rows = [row for row in final.rows if row.setting_key == "sparse80"]
    assert len(rows) == 17
    assert panel.chart.names == [row.layer for row in rows]
    np.testing.assert_allclose(panel.chart.values, [100 * row.drop for row in rows])
    assert list(panel.chart.values) == sorted(panel.chart.values, reverse=True)  # worst first
    assert panel.chart.values[0] > 10  # 80 % sparsity in one layer costs the demo network points
    assert panel.status.text().startswith("17 probes on 64–128 samples; drop in top-1 accuracy")
    # The table's column: the same drops, in points, coloured by size.
    texts, colours = column(window.layer_table), column(window.layer_table, Qt.ItemDataRole.BackgroundRole)
    assert texts == {row.layer: f"{100 * row.drop:.1f} pt" for row in rows}
    for row in rows:
        expected = POOR_BACKGROUND if row.drop >= 0.02 else FAIR_BACKGROUND if row.drop >= 0.005 else None
        assert colours[row.layer] == expected, row
    # Sorted ascending, the most sensitive layer comes first.
    window.layer_table.view.sortByColumn(SENSITIVITY_COLUMN, Qt.SortOrder.AscendingOrder)
    assert window.layer_table.visible_names()[0] == rows[0].layer
    # A click on a bar selects its layer in the table.
    panel.chart.pick(3)
    assert window.layer_table.selected_names() == [rows[3].layer]
    assert error_calls == []


@pytest.mark.slow  # over 10 s: CI's second stage
def test_cancel_ends_the_sweep_cleanly_and_the_next_one_runs(qtbot, open_and_wait, window, error_calls):
    panel, reports, _drawn = start(window, qtbot, open_and_wait, ["int4"])
    qtbot.waitUntil(lambda: any(report.rows for report in reports), timeout=SWEEP_TIMEOUT)
    panel.cancel_button.click()
    assert not window.analysis.runner.running and not panel.running
    assert panel.run_button.isEnabled() and not panel.cancel_button.isEnabled()
    assert panel.status.text().startswith("Stopped after ")
    assert not panel.report.complete and panel.chart.names  # the rows that did arrive stay
    seen = len(reports)
    # The child drops the cancelled job: a new sweep in the same process runs to the end.
    panel.set_checked(["sparse80"])
    panel.run()
    qtbot.waitUntil(lambda: panel.report is not None and panel.report.complete, timeout=SWEEP_TIMEOUT)
    assert all(report.setting_key == "sparse80" for report in panel.report.rows)
    assert all(row.setting_key == "int4" for report in reports[:seen] for row in report.rows)
    assert window.analysis.process.alive
    assert error_calls == []


def test_a_failed_sweep_is_one_error_in_the_funnel(qtbot, open_and_wait, window, error_calls, tmp_path):
    from slimscope.core.errors import DatasetError

    open_and_wait(window, DEMO_MODEL)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip archive")
    window.live.pause()  # the live comparison would report the broken data too
    window.session.set_evaluation_data(broken)
    window.sensitivity.set_checked(["int8"])
    window.sensitivity.run()
    qtbot.waitUntil(lambda: not window.sensitivity.running, timeout=SWEEP_TIMEOUT)
    qtbot.wait(500)
    assert len(error_calls) == 1 and isinstance(error_calls[0], DatasetError)
    assert window.sensitivity.status.text() == "The sweep failed."
    assert window.sensitivity.run_button.isEnabled()


def test_the_ray_address_is_remembered(window):
    from slimscope.gui import settings

    panel = window.sensitivity
    assert panel.ray_address.text() == "" and panel.ray_address.placeholderText() == "this computer"
    panel.ray_address.setText(" 10.0.0.5:6379 ")
    panel.ray_address.editingFinished.emit()
    assert settings.ray_address() == "10.0.0.5:6379"
