"""`LiveComparison`: after each recipe or data edit (debounced), optimize and evaluate in the background.

One job at a time: a newer edit cancels the running job, and results of older generations are dropped
(`TaskRunner`). The result goes into the Session, on the main thread.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QTimer, Signal

from slimscope.core.comparison import Comparison, iter_compare
from slimscope.core.session import Session
from slimscope.gui.task_runner import TaskRunner

DEBOUNCE_MS = 300


class LiveComparison(QObject):
    progressed = Signal(object)  # Progress (its partial: RunningMetrics while evaluating)
    failed = Signal(object)  # the exception
    running_changed = Signal(bool)

    def __init__(self, session: Session, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.runner = TaskRunner(self)
        self.timer = QTimer(self, singleShot=True, interval=DEBOUNCE_MS)
        self.timer.timeout.connect(self.run_now)
        self.runner.progressed.connect(lambda _gen, progress: self.progressed.emit(progress))
        self.runner.returned.connect(self._on_returned)
        self.runner.failed.connect(lambda _gen, exc: self.failed.emit(exc))
        self.runner.running_changed.connect(self.running_changed)
        session.recipe_changed.connect(self.schedule)
        session.data_changed.connect(self.schedule)
        session.model_changed.connect(self._on_model)

    @property
    def generation(self) -> int:
        return self.runner.generation

    def schedule(self, *_args: object) -> None:
        """Run after the edits stop for DEBOUNCE_MS; a job already running is stopped now."""
        self.runner.cancel()
        self.timer.start()

    def run_now(self) -> None:
        self.timer.stop()
        session = self.session
        if session.loaded is None or session.recipe is None or session.evaluation_data is None:
            self.runner.cancel()
            return
        task = iter_compare(
            session.loaded,
            session.recipe,
            session.evaluation_data,
            session.calibration_data,
            cache=session.cache,
        )
        self.runner.start(task)

    def cancel(self) -> None:
        self.timer.stop()
        self.runner.cancel()

    def _on_model(self, _report: object) -> None:
        self.cancel()

    def _on_returned(self, _generation: int, result: Comparison) -> None:
        if result.recipe == self.session.recipe:
            self.session.set_result(result)
