"""`run_app`: start the Qt application with the main window on a model (the demo one by default)."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from slimscope.gui import errors
from slimscope.gui.main_window import MainWindow
from slimscope.resources import APP_ICON, DEMO_MODEL

QUIT_AFTER_ENV = "SLIMSCOPE_QUIT_AFTER_MS"  # for smoke tests: quit the event loop after this many ms


def freeze_imported_objects() -> None:
    """Move everything imported so far (≈110 k modules, classes, functions: never garbage) out of the cyclic
    garbage collector's view. Its full passes over them took ~45 ms on the GUI thread, now ~1 ms. Called once
    before any window exists: freezing a window's objects would keep closed windows' items alive."""
    gc.collect()
    gc.freeze()


def run_app(path: Path | None, *, trust: bool = False) -> int:
    app = QApplication.instance() or QApplication(sys.argv[:1])
    freeze_imported_objects()
    assert isinstance(app, QApplication)
    app.setApplicationName("Slimscope")
    app.setOrganizationName("Slimscope")
    app.setWindowIcon(QIcon(str(APP_ICON)))
    window = MainWindow()
    sys.excepthook = lambda _type, exc, _tb: errors.show_error(window, exc)
    window.show()
    window.open_model(Path(path) if path is not None else DEMO_MODEL, trust=trust)
    quit_after = os.environ.get(QUIT_AFTER_ENV)
    if quit_after:
        QTimer.singleShot(int(quit_after), app.quit)
    app.aboutToQuit.connect(window.opener.cancel)
    app.aboutToQuit.connect(window.live.shutdown)
    app.aboutToQuit.connect(window.analysis.shutdown)
    app.aboutToQuit.connect(window.stop_netron)
    try:
        return app.exec()
    finally:
        sys.excepthook = sys.__excepthook__
