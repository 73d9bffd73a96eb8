"""`LiveComparison`: after each recipe or data edit (debounced), optimize and evaluate in the background.

The work runs in a child process (`TaskProcess`: the window's interpreter is never held by onnx or
onnxruntime, and the child keeps calibration ranges warm between edits); a worker thread only relays its
messages. One job at a time: a newer edit cancels the running job, and results of older generations are
dropped (`TaskRunner`). Results go into the Session, on the main thread: first the headline numbers, then
the same comparison with latency and per-layer errors.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QTimer, Signal

from slimscope.core.comparison import Comparison
from slimscope.core.session import Session
from slimscope.core.task_process import TaskProcess
from slimscope.core.tasks import Progress
from slimscope.gui.task_runner import TaskRunner

DEBOUNCE_MS = 300


class LiveComparison(QObject):
    progressed = Signal(object)  # Progress (its partial: RunningMetrics while evaluating)
    failed = Signal(object)  # the exception
    running_changed = Signal(bool)

    def __init__(self, session: Session, process: TaskProcess, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.runner = TaskRunner(self)
        self.process = process  # shared with the model opener: the child keeps the model it opened
        self.paused = False  # while a model is being opened in the same process
        self.timer = QTimer(self, singleShot=True, interval=DEBOUNCE_MS)
        self.timer.timeout.connect(self.run_now)
        self.runner.progressed.connect(self._on_progress)
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

    def pause(self) -> None:
        """Hold comparisons back (a model is being opened in the shared process)."""
        self.paused = True
        self.cancel()

    def resume(self) -> None:
        """Compare again if the latest result is not for the current recipe."""
        self.paused = False
        if not self.session.result_is_current:
            self.schedule()

    def run_now(self) -> None:
        self.timer.stop()
        if self.paused:
            return
        session = self.session
        if session.loaded is None or session.recipe is None or session.evaluation_data is None:
            self.runner.cancel()
            return
        task = self.process.run("compare", session.recipe, session.evaluation_data, session.calibration_data)
        self.runner.start(task)

    def cancel(self) -> None:
        self.timer.stop()
        self.runner.cancel()

    def shutdown(self) -> None:
        """Cancel and end the child process (the window is closing)."""
        self.cancel()
        self.process.close()

    def _on_model(self, _report: object) -> None:
        self.cancel()
        self.process.set_model(self.session.loaded)

    def _on_progress(self, _generation: int, progress: Progress) -> None:
        if isinstance(progress.partial, Comparison):
            self._on_returned(_generation, progress.partial)  # the headline numbers, before latency
        self.progressed.emit(progress)

    def _on_returned(self, _generation: int, result: Comparison) -> None:
        if result.recipe == self.session.recipe:
            self.session.set_result(result)
