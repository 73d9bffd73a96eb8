"""The app's self-check: open the real window on a model, wait for the first comparison, exit 0 or 1.

`slimscope --smoke-test [MODEL]` in the packaged app (`packaging/frozen_entry.py`), or
`python -m slimscope.gui.smoke_test [MODEL]` from a pip install. It runs offscreen unless
QT_QPA_PLATFORM says otherwise, goes through the same window, worker process and comparison a user gets,
and ends as soon as the first comparison numbers arrived (or right after opening, for a model without
evaluation data). Any error the window would show in a dialog, an unhandled exception, or the timeout
ends it with exit code 1 and one line on stderr. The user's settings (recent files, window layout) are
not touched: it uses settings in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_TIMEOUT_S = 120.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="slimscope --smoke-test",
        description="Open the window offscreen on MODEL (the demo model by default), wait until the model "
        "is open and the first comparison numbers arrived, and exit 0; exit 1 with the error on stderr.",
    )
    parser.add_argument("model", type=Path, nargs="?", help="the model to open (default: the demo model)")
    parser.add_argument("--data", type=Path, help="evaluation data to compare on (the demo has its own)")
    parser.add_argument("--trust", action="store_true", help="open TorchScript and .pt2 files")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds (default: 120)")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    with tempfile.TemporaryDirectory(prefix="slimscope-smoke-") as settings_folder:
        return run_smoke_test(args.model, args.data, trust=args.trust, timeout_s=args.timeout,
                              settings_folder=Path(settings_folder))  # fmt: skip


def run_smoke_test(
    model: Path | None, data: Path | None, *, trust: bool, timeout_s: float, settings_folder: Path
) -> int:
    """Run the window until the first comparison (success) or an error or the timeout (failure)."""
    # Qt and the window are imported here: `--help` and argument errors need no display libraries.
    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtWidgets import QApplication

    from slimscope.gui import errors
    from slimscope.gui.main_window import MainWindow
    from slimscope.resources import DEMO_MODEL

    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(settings_folder))
    app = QApplication.instance() or QApplication(sys.argv[:1])
    assert isinstance(app, QApplication)
    app.setApplicationName("Slimscope")
    app.setOrganizationName("Slimscope")
    window = MainWindow()
    check = _SmokeCheck(app, window, data)
    errors.show_error = lambda _parent, exc: check.fail(_describe(exc))  # every error dialog ends the check
    previous_hook = sys.excepthook
    sys.excepthook = lambda _type, exc, _tb: check.fail(_describe(exc))
    QTimer.singleShot(
        int(timeout_s * 1000), lambda: check.fail(f"timed out after {timeout_s:g} s {check.stage}")
    )
    try:
        window.show()
        window.open_model(Path(model) if model is not None else DEMO_MODEL, trust=trust)
        code = app.exec() if check.code is None else check.code
    finally:
        sys.excepthook = previous_hook
        window.close()  # ends the worker processes and Netron, as closing the window does
    if code == 0:
        print(check.summary)
    else:
        print(f"slimscope smoke test: FAILED: {check.error}", file=sys.stderr)
    return code


class _SmokeCheck:
    """Follows the window through opening and the first comparison; quits the event loop with the outcome."""

    def __init__(self, app, window, data: Path | None) -> None:
        self.app, self.window, self.data = app, window, data
        self.started = time.monotonic()
        self.opened_after: float | None = None
        self.stage = "while opening the model"
        self.code: int | None = None
        self.error = ""
        self.summary = ""
        window.opener.opened.connect(self._on_opened)
        window.session.result_changed.connect(self._on_result)

    def _on_opened(self, path: Path, report) -> None:
        self.opened_after = time.monotonic() - self.started
        self.stage = "waiting for the first comparison"
        session = self.window.session
        if self.data is not None:
            session.set_evaluation_data(self.data)
        if session.evaluation_data is None:
            self.succeed(
                f"opened {Path(path).name} ({len(report.layers)} layers); no evaluation data to compare on"
            )

    def _on_result(self, comparison) -> None:
        if comparison is None or self.code is not None:
            return
        numbers = comparison.report
        if numbers.accuracy is not None:
            headline = f"top-1 {numbers.accuracy['original']:.1%} -> {numbers.accuracy['optimized']:.1%}"
        else:
            headline = f"agreement {numbers.agreement:.1%}" if numbers.agreement is not None else "compared"
        self.succeed(
            f"first comparison after {time.monotonic() - self.started:.1f} s on {numbers.samples} samples: {headline}"
        )

    def succeed(self, what: str) -> None:
        opened = f"model open after {self.opened_after:.1f} s; " if self.opened_after is not None else ""
        self.summary = f"slimscope smoke test: OK: {opened}{what}"
        self._finish(0)

    def fail(self, error: str) -> None:
        if self.code is None:
            self.error = error
            self._finish(1)

    def _finish(self, code: int) -> None:
        if self.code is None:
            self.code = code
            self.app.exit(code)


def _describe(exc: BaseException) -> str:
    from slimscope.core.errors import SlimscopeError

    return str(exc) if isinstance(exc, SlimscopeError) else f"{type(exc).__name__}: {exc}"


if __name__ == "__main__":
    sys.exit(main())
