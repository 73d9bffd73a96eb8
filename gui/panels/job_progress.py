"""`JobProgress`: a progress bar and a Cancel button for the status bar, shown only while a job runs."""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QProgressBar, QPushButton, QWidget

from slimscope.core.tasks import Progress


class JobProgress(QWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.bar = QProgressBar(maximumWidth=220, textVisible=True)
        self.cancel_button = QPushButton("Cancel")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.bar)
        layout.addWidget(self.cancel_button)
        self.hide()

    def set_running(self, running: bool) -> None:
        self.bar.setRange(0, 0)  # busy until the first fraction arrives
        self.setVisible(running)

    def show_progress(self, progress: Progress) -> None:
        if progress.fraction is None:
            self.bar.setRange(0, 0)
        else:
            self.bar.setRange(0, 1000)
            self.bar.setValue(round(progress.fraction * 1000))
        self.bar.setToolTip(progress.message)
