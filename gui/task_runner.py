"""`TaskRunner`: one core task generator at a time in a superqt worker, with generation numbers.

A newer `start` (or `cancel`) stops the running task at its next yield and drops whatever it still
delivers. Results reach this object's signals on the main thread (where it lives), tagged with the
generation that produced them.
"""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal
from superqt.utils import GeneratorWorker, create_worker

from slimscope.core.errors import CancelledError
from slimscope.core.tasks import Progress, Task


class TaskRunner(QObject):
    progressed = Signal(int, object)  # generation, Progress
    returned = Signal(int, object)  # generation, the task's result
    failed = Signal(int, object)  # generation, the exception
    running_changed = Signal(bool)
    # (generation, payload) relays from the worker thread, handled on the main thread.
    _progress = Signal(int, object)
    _returned = Signal(int, object)
    _errored = Signal(int, object)
    _finished = Signal(int, object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.generation = 0
        self._worker: GeneratorWorker | None = None
        self._progress.connect(self._on_progress)
        self._returned.connect(self._on_returned)
        self._errored.connect(self._on_errored)
        self._finished.connect(self._on_finished)

    @property
    def running(self) -> bool:
        return self._worker is not None

    def start(self, task: Task) -> int:
        """Cancel the running task, start `task`; returns its generation number."""
        self.cancel()
        self.generation += 1
        generation = self.generation
        worker = create_worker(_drive, task, _start_thread=False, _ignore_errors=True)
        worker.yielded.connect(lambda progress: self._progress.emit(generation, progress))
        worker.returned.connect(lambda result: self._returned.emit(generation, result))
        worker.errored.connect(lambda exc: self._errored.emit(generation, exc))
        worker.finished.connect(lambda: self._finished.emit(generation, task))
        self._worker = worker
        self.running_changed.emit(True)
        worker.start()
        return generation

    def cancel(self) -> None:
        """Stop the running task (at its next yield); whatever it still sends is dropped."""
        if self._worker is None:
            return
        self._worker.quit()
        self._worker = None
        self.generation += 1
        self.running_changed.emit(False)

    def _on_progress(self, generation: int, progress: Progress) -> None:
        if generation == self.generation:
            self.progressed.emit(generation, progress)

    def _on_returned(self, generation: int, result: object) -> None:
        if generation == self.generation:
            self.returned.emit(generation, result)

    def _on_errored(self, generation: int, exc: Exception) -> None:
        if isinstance(exc, CancelledError):  # stopped on purpose (e.g. a newer job took its process)
            return
        if generation == self.generation:
            self.failed.emit(generation, exc)

    def _on_finished(self, generation: int, task: Task) -> None:
        task.close()  # runs the task's cleanup when it was cancelled midway; no-op when it finished
        if generation == self.generation:
            self._worker = None
            self.running_changed.emit(False)


def _drive(task: Task) -> Task:
    return (yield from task)
