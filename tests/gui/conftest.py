"""GUI tests: Qt offscreen, settings in a temporary folder, the error funnel recorded instead of shown."""

import gc
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before anything imports Qt

import pytest  # noqa: E402
from PySide6.QtCore import QCoreApplication, QEvent, QSettings, QThreadPool  # noqa: E402

from slimscope.core.inspection import iter_inspect  # noqa: E402
from slimscope.core.loading import load_model  # noqa: E402
from slimscope.core.tasks import run_sync  # noqa: E402
from slimscope.resources import DEMO_MODEL  # noqa: E402


@pytest.fixture(autouse=True)
def isolated_settings(qapp, tmp_path):
    QCoreApplication.setOrganizationName("SlimscopeTest")
    QCoreApplication.setApplicationName("SlimscopeTest")
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    yield


@pytest.fixture
def error_calls(monkeypatch):
    """Every exception the funnel would show, instead of a blocking dialog."""
    from slimscope.gui import errors

    calls = []
    monkeypatch.setattr(errors, "show_error", lambda parent, exc: calls.append(exc))
    return calls


@pytest.fixture(scope="session")
def demo_report():
    """The demo model inspected by core directly: what the GUI must show."""
    return run_sync(iter_inspect(load_model(DEMO_MODEL)))


@pytest.fixture
def window(qtbot, error_calls):
    from slimscope.gui.main_window import MainWindow

    win = MainWindow()
    # pytest-qt closes its widgets before fixtures tear down: stop the jobs first in either order.
    qtbot.addWidget(
        win, before_close_func=lambda w: (w.opener.cancel(), w.live.cancel(), w.analysis.cancel())
    )
    win.show()
    yield win
    # Tear the window down while Qt is alive: left to the final garbage collection, pyqtgraph's items
    # are freed after Qt and the interpreter aborts.
    win.opener.cancel()
    win.live.cancel()
    win.analysis.cancel()
    qtbot.waitUntil(lambda: QThreadPool.globalInstance().activeThreadCount() == 0, timeout=10_000)
    win.close()
    win.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    gc.collect()


@pytest.fixture
def open_and_wait(qtbot):
    """Open a file in the window and wait until its job has ended (loaded, failed or dropped)."""

    def run(window, path, timeout=30_000):
        window.open_model(path)
        qtbot.waitUntil(lambda: not window.opener.running, timeout=timeout)

    return run
