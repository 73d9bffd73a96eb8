"""Opening a model off the main thread: core's load and inspect generators in a superqt worker.

Each request gets a generation number; a newer request (or Cancel) stops the older one and anything it
still delivers is dropped. The worker's signals are re-emitted through this object's own signals, whose
handlers run on the main thread (where the object lives) whichever thread emits them.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal
from superqt.utils import GeneratorWorker, create_worker

from slimscope.core.inspection import ModelReport, iter_inspect
from slimscope.core.loading import iter_load_model
from slimscope.core.tasks import Progress, Task


def load_and_inspect(path: Path, trust: bool) -> Task[ModelReport]:
    """Core's two generators chained: open the file, then measure every layer."""
    loaded = yield from iter_load_model(path, trust=trust)
    return (yield from iter_inspect(loaded))


class ModelOpener(QObject):
    """Runs one open request at a time and reports its progress, result or error as signals."""

    progressed = Signal(object)  # Progress
    opened = Signal(object, object)  # Path, ModelReport
    failed = Signal(object)  # the exception
    running_changed = Signal(bool)
    # (generation, payload) relays from the worker thread, handled on the main thread.
    _progress = Signal(int, object)
    _returned = Signal(int, object)
    _errored = Signal(int, object)
    _finished = Signal(int, object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._generation = 0
        self._worker: GeneratorWorker | None = None
        self._paths: dict[int, Path] = {}
        self._progress.connect(self._on_progress)
        self._returned.connect(self._on_returned)
        self._errored.connect(self._on_errored)
        self._finished.connect(self._on_finished)

    @property
    def running(self) -> bool:
        return self._worker is not None

    def open(self, path: Path, *, trust: bool = False) -> None:
        self.cancel()
        self._generation += 1
        generation = self._generation
        task = load_and_inspect(Path(path), trust)
        worker = create_worker(_drive, task, _start_thread=False, _ignore_errors=True)
        self._paths[generation] = Path(path)
        worker.yielded.connect(lambda progress: self._progress.emit(generation, progress))
        worker.returned.connect(lambda report: self._returned.emit(generation, report))
        worker.errored.connect(lambda exc: self._errored.emit(generation, exc))
        worker.finished.connect(lambda: self._finished.emit(generation, task))
        self._worker = worker
        self.running_changed.emit(True)
        worker.start()

    def cancel(self) -> None:
        """Stop the running request (at its next yield); whatever it still sends is dropped."""
        if self._worker is None:
            return
        self._worker.quit()
        self._worker = None
        self._generation += 1
        self.running_changed.emit(False)

    def _on_progress(self, generation: int, progress: Progress) -> None:
        if generation == self._generation:
            self.progressed.emit(progress)

    def _on_returned(self, generation: int, report: ModelReport) -> None:
        if generation == self._generation:
            self.opened.emit(self._paths[generation], report)

    def _on_errored(self, generation: int, exc: Exception) -> None:
        if generation == self._generation:
            self.failed.emit(exc)

    def _on_finished(self, generation: int, task: Task) -> None:
        # The worker has left the generator: closing it runs the core task's cleanup (child processes,
        # temporary folders) when it was cancelled midway; on a finished task it does nothing.
        task.close()
        self._paths.pop(generation, None)
        if generation == self._generation:
            self._worker = None
            self.running_changed.emit(False)


def _drive(task: Task[ModelReport]) -> Task[ModelReport]:
    return (yield from task)
