"""The one funnel every error reaches the user through: a dialog with one sentence, details collapsed."""

from __future__ import annotations

import traceback

from PySide6.QtWidgets import QMessageBox, QWidget

from slimscope.core.errors import SlimscopeError


def show_error(parent: QWidget | None, exc: BaseException) -> None:
    """Show `exc` in a modal dialog: a `SlimscopeError`'s own sentence, or a short note with the traceback."""
    box = QMessageBox(parent)
    box.setIcon(QMessageBox.Icon.Warning)
    box.setWindowTitle("Slimscope")
    if isinstance(exc, SlimscopeError):
        box.setText(str(exc))
    else:  # a bug or a library failing on odd input: say so briefly, keep the traceback for a report
        # The library's own words (an exception type, a protobuf message) mean nothing to the user: they
        # go to the details, for a bug report.
        box.setText(
            "An unexpected problem inside Slimscope or a library it uses stopped this step (a bug worth "
            "reporting). Your files are unchanged; the details below say what failed."
        )
        box.setDetailedText("".join(traceback.format_exception(exc)))
    box.exec()
