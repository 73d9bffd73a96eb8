"""View → Theme: light and dark palettes for the widgets and the plots (also plots made later), the choice
remembered between starts, and "system" following the system's colour scheme as it changes."""

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication

from slimscope.gui import settings, theme
from slimscope.gui.main_window import MainWindow
from slimscope.gui.panels.histogram_panel import HistogramPanel
from slimscope.gui.panels.layer_bar_chart import LayerBarChart

DARK_BACKGROUND, DARK_FOREGROUND = theme.PLOT_COLOURS["dark"]
LIGHT_BACKGROUND, LIGHT_FOREGROUND = theme.PLOT_COLOURS["light"]


@pytest.fixture(autouse=True)
def light_afterwards():
    """The palette and pyqtgraph's options are global: leave them light for the tests that follow."""
    yield
    theme.apply_theme("light")


def window_colour():
    return QApplication.instance().palette().color(QPalette.ColorRole.Window)


def plot_background(plot) -> str:
    return plot.backgroundBrush().color().name()


def checked_theme(window) -> list[str]:
    return [key for key in ("system", "light", "dark") if window.actions_by_key[f"theme_{key}"].isChecked()]


def test_theme_menu_is_one_exclusive_choice(window):
    view = next(a.menu() for a in window.menuBar().actions() if a.text() == "&View")
    submenu = next(a.menu() for a in view.actions() if a.menu() is not None and a.text() == "&Theme")
    assert [a.text() for a in submenu.actions()] == ["&System", "&Light", "&Dark"]
    assert all(a.isCheckable() and a.toolTip() for a in submenu.actions())
    assert checked_theme(window) == ["system"]  # the default
    window.actions_by_key["theme_light"].trigger()
    assert checked_theme(window) == ["light"]


def test_dark_colours_the_palette_and_every_plot_even_later_ones(window, qtbot):
    assert window_colour().lightness() > 200  # offscreen reports no scheme: system means light
    assert plot_background(window.histogram.plot) == LIGHT_BACKGROUND
    window.actions_by_key["theme_dark"].trigger()
    assert settings.theme() == "dark"
    assert checked_theme(window) == ["dark"]
    assert window_colour().lightness() < 60
    # Widgets take the application's palette through posted events.
    qtbot.waitUntil(lambda: window.layer_table.view.palette().color(QPalette.ColorRole.Base).lightness() < 60)
    for plot in (window.histogram.plot, window.heatmap.plot, window.overview.chart, window.history.size_plot):
        assert plot_background(plot) == DARK_BACKGROUND
    axis = window.histogram.plot.getAxis("bottom")
    assert axis.textPen().color().name() == DARK_FOREGROUND
    assert DARK_FOREGROUND in axis.labelString()  # the axis title, not only the tick numbers
    colour_bar_axis = window.heatmap.color_bar.axis
    assert colour_bar_axis.textPen().color().name() == DARK_FOREGROUND
    assert theme.STATUS_COLOURS["dark"]["warning"] in window.comparison.warnings.styleSheet()
    # Plots made after the switch take the dark colours from pyqtgraph's options.
    later, chart = HistogramPanel(), LayerBarChart("values")
    qtbot.addWidget(later)
    qtbot.addWidget(chart)
    assert plot_background(later.plot) == DARK_BACKGROUND
    assert plot_background(chart) == DARK_BACKGROUND
    assert chart.getAxis("bottom").textPen().color().name() == DARK_FOREGROUND
    window.actions_by_key["theme_light"].trigger()
    assert window_colour().lightness() > 200
    assert plot_background(window.histogram.plot) == LIGHT_BACKGROUND
    assert plot_background(later.plot) == LIGHT_BACKGROUND
    assert theme.STATUS_COLOURS["light"]["warning"] in window.comparison.warnings.styleSheet()


def test_the_choice_is_remembered_by_the_next_window(window, qtbot):
    window.set_theme("dark")
    theme.apply_theme("light")  # as a fresh start would be, before the window applies the setting
    second = MainWindow()
    qtbot.addWidget(second, before_close_func=lambda w: (w.opener.cancel(), w.live.cancel()))
    try:
        assert checked_theme(second) == ["dark"]
        assert window_colour().lightness() < 60
        assert plot_background(second.histogram.plot) == DARK_BACKGROUND
    finally:
        second.close()  # ends its worker process; pytest-qt deletes the window


def test_system_follows_the_system_scheme_and_a_fixed_choice_does_not(window):
    assert settings.theme() == "system"
    window.follow_system_scheme(Qt.ColorScheme.Dark)
    assert window_colour().lightness() < 60
    assert plot_background(window.histogram.plot) == DARK_BACKGROUND
    window.follow_system_scheme(Qt.ColorScheme.Light)
    assert window_colour().lightness() > 200
    window.set_theme("light")
    window.follow_system_scheme(Qt.ColorScheme.Dark)
    assert window_colour().lightness() > 200  # the user chose light: the system's switch is ignored
    assert plot_background(window.histogram.plot) == LIGHT_BACKGROUND


def test_system_means_the_scheme_qt_reports(monkeypatch):
    assert theme.resolve("system", Qt.ColorScheme.Dark) == "dark"
    assert theme.resolve("system", Qt.ColorScheme.Unknown) == "light"
    assert theme.resolve("dark", Qt.ColorScheme.Light) == "dark"
    monkeypatch.setattr(theme, "system_scheme", lambda scheme=None: "dark")
    assert theme.resolve("system") == "dark"


def test_unknown_stored_theme_falls_back_to_system():
    from PySide6.QtCore import QSettings

    QSettings().setValue("appearance/theme", "purple")
    assert settings.theme() == "system"
    with pytest.raises(ValueError, match="Unknown theme"):
        settings.set_theme("purple")
