"""Light and dark appearance: the Qt palette and pyqtgraph's plot colours, following the system or the
user's choice (View → Theme), and switching live when the system's colour scheme changes.

Qt reports the system's scheme (`QStyleHints.colorScheme`, Qt ≥ 6.5) but only some platform themes repaint
widgets for it; the Fusion style with an explicit palette looks the same everywhere, so we set one (both
schemes spelled out: Fusion's own standard palette may itself follow the system on newer Qt).
pyqtgraph does not follow Qt's palette: its config options give plots made later their colours, and plots
that already exist are recoloured here. Text coloured for a status (warnings, errors) is recoloured too.
"""

from __future__ import annotations

from typing import Literal

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication, QWidget

Scheme = Literal["light", "dark"]
CHOICES = ("system", "light", "dark")

# (background, foreground) of plots per scheme.
PLOT_COLOURS: dict[Scheme, tuple[str, str]] = {
    "light": ("#ffffff", "#202020"),
    "dark": ("#1e1f22", "#d0d0d0"),
}
# Status text per scheme, each at least 4:1 against that scheme's window colour.
STATUS_COLOURS: dict[Scheme, dict[str, str]] = {
    "light": {"warning": "#b35900", "error": "#c0392b"},
    "dark": {"warning": "#f0a050", "error": "#ff7b72"},
}
STATUS_PROPERTY = "slimscope_status"  # a widget's status kind, so that a theme switch can recolour it
SCHEME_PROPERTY = "slimscope_scheme"  # the scheme applied last, on the application object

_Role = QPalette.ColorRole
PALETTES: dict[Scheme, dict[QPalette.ColorRole, str]] = {
    "light": {
        _Role.Window: "#efefef", _Role.WindowText: "#000000", _Role.Base: "#ffffff",
        _Role.AlternateBase: "#f7f7f7", _Role.ToolTipBase: "#ffffdc", _Role.ToolTipText: "#000000",
        _Role.PlaceholderText: "#7f7f7f", _Role.Text: "#000000", _Role.Button: "#efefef",
        _Role.ButtonText: "#000000", _Role.BrightText: "#ffffff", _Role.Highlight: "#308cc6",
        _Role.HighlightedText: "#ffffff", _Role.Link: "#0b57d0", _Role.Light: "#ffffff",
        _Role.Midlight: "#cacaca", _Role.Mid: "#b8b8b8", _Role.Dark: "#9f9f9f", _Role.Shadow: "#767676",
    },
    "dark": {
        _Role.Window: "#2b2d30", _Role.WindowText: "#dfe1e5", _Role.Base: "#1e1f22",
        _Role.AlternateBase: "#26282b", _Role.ToolTipBase: "#3c3f41", _Role.ToolTipText: "#dfe1e5",
        _Role.PlaceholderText: "#8c8f94", _Role.Text: "#dfe1e5", _Role.Button: "#393b40",
        _Role.ButtonText: "#dfe1e5", _Role.BrightText: "#ff6b68", _Role.Highlight: "#2f65ca",
        _Role.HighlightedText: "#ffffff", _Role.Link: "#589df6", _Role.Light: "#4a4d52",
        _Role.Midlight: "#3f4247", _Role.Mid: "#313337", _Role.Dark: "#1b1c1f", _Role.Shadow: "#000000",
    },
}  # fmt: skip
DISABLED_TEXT: dict[Scheme, str] = {"light": "#a0a0a0", "dark": "#6f737a"}


def system_scheme(scheme: Qt.ColorScheme | None = None) -> Scheme:
    """The system's scheme (`scheme`, as a change signal reports it, or asked now); unknown means light."""
    if scheme is None:
        scheme = QGuiApplication.styleHints().colorScheme()
    return "dark" if scheme == Qt.ColorScheme.Dark else "light"


def resolve(choice: str, system: Qt.ColorScheme | None = None) -> Scheme:
    """The scheme `choice` stands for: itself, or the system's for "system" (and anything unknown)."""
    if choice in ("light", "dark"):
        return choice  # type: ignore[return-value]
    return system_scheme(system)


def palette_for(scheme: Scheme) -> QPalette:
    palette = QPalette()
    for role, colour in PALETTES[scheme].items():
        palette.setColor(role, QColor(colour))
    palette.setColor(_Role.Accent, QColor(PALETTES[scheme][_Role.Highlight]))
    for role in (_Role.Text, _Role.WindowText, _Role.ButtonText):
        palette.setColor(QPalette.ColorGroup.Disabled, role, QColor(DISABLED_TEXT[scheme]))
    return palette


def dark_palette() -> QPalette:
    return palette_for("dark")


def current_scheme() -> Scheme:
    """The scheme applied last ("light" before any)."""
    app = QApplication.instance()
    return "dark" if app is not None and app.property(SCHEME_PROPERTY) == "dark" else "light"


def apply_theme(choice: str, app: QApplication | None = None, system: Qt.ColorScheme | None = None) -> Scheme:
    """Apply `choice` ("system", "light" or "dark") to the application, every plot and every status text;
    `system`: the system's scheme when a change signal reports it. Returns the scheme applied."""
    app = app or QApplication.instance()  # type: ignore[assignment]
    assert isinstance(app, QApplication)
    scheme = resolve(choice, system)
    app.setStyle("Fusion")
    app.setPalette(palette_for(scheme))
    app.setProperty(SCHEME_PROPERTY, scheme)
    background, foreground = PLOT_COLOURS[scheme]
    pg.setConfigOptions(background=background, foreground=foreground, antialias=True)
    for widget in app.allWidgets():
        if isinstance(widget, pg.PlotWidget):
            style_plot(widget)
        kind = widget.property(STATUS_PROPERTY)
        if kind:
            set_status_colour(widget, kind)
    return scheme


def style_plot(plot: pg.PlotWidget) -> None:
    """Colour one plot for the current scheme: background, every axis in its scene (colour bars' too),
    legends and the title."""
    foreground = pg.getConfigOption("foreground")
    plot.setBackground(pg.getConfigOption("background"))
    for item in plot.scene().items():
        if isinstance(item, pg.AxisItem):
            item.setPen(foreground)
            item.setTextPen(foreground)
        elif isinstance(item, pg.LegendItem):
            item.setLabelTextColor(foreground)
            for _sample, label in item.items:
                label.setText(label.text, color=foreground)
    title = plot.getPlotItem().titleLabel
    title.setText(title.text, color=foreground)


def set_status_colour(widget: QWidget, kind: str | None) -> None:
    """Colour a label's text as a status ("warning" or "error") readable in the current scheme, and again
    after every theme switch; None: back to the palette's text colour."""
    widget.setProperty(STATUS_PROPERTY, kind or "")
    colour = STATUS_COLOURS[current_scheme()].get(kind or "")
    widget.setStyleSheet(f"color: {colour}" if colour else "")
