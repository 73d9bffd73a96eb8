"""Opening a model off the main thread: core's load and inspect run in the worker process (`TaskProcess`,
which then keeps the model for the live comparison), relayed by a `TaskRunner`.

Each request gets a generation number; a newer request (or Cancel) stops the older one and anything it
still delivers is dropped (the runner's rules). This object only adds what opening needs: the path that
was asked for travels with the result, and a missing input shape is reported as a question for the user
(`shape_needed`) rather than as an error.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal

from slimscope.core.errors import InputShapeError
from slimscope.core.inspection import ModelReport
from slimscope.core.task_process import TaskProcess
from slimscope.gui.task_runner import TaskRunner

Shapes = list[tuple[int, ...]]


class ModelOpener(QObject):
    """Runs one open request at a time and reports its progress, result or error as signals."""

    progressed = Signal(object)  # Progress
    opened = Signal(object, object)  # Path, ModelReport
    failed = Signal(object)  # the exception
    # Path, trust, the shapes that were given (or None), the InputShapeError: ask the user and retry
    shape_needed = Signal(object, bool, object, object)
    running_changed = Signal(bool)

    def __init__(self, process: TaskProcess, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.process = process
        self._runner = TaskRunner(self)
        self._requests: dict[int, tuple[Path, bool, Shapes | None]] = {}
        self._runner.progressed.connect(lambda _generation, progress: self.progressed.emit(progress))
        self._runner.returned.connect(self._on_returned)
        self._runner.failed.connect(self._on_failed)
        self._runner.running_changed.connect(self.running_changed.emit)

    @property
    def running(self) -> bool:
        return self._runner.running

    def open(self, path: Path, *, trust: bool = False, input_shapes: Shapes | None = None) -> None:
        path = Path(path)
        generation = self._runner.start(self.process.run("open", path, trust, input_shapes))
        self._requests = {generation: (path, trust, input_shapes)}  # only the newest can still deliver

    def cancel(self) -> None:
        """Stop the running request (at its next yield); whatever it still sends is dropped."""
        self._runner.cancel()

    def _on_returned(self, generation: int, report: ModelReport) -> None:
        self.opened.emit(self._requests.pop(generation)[0], report)

    def _on_failed(self, generation: int, exc: BaseException) -> None:
        request = self._requests.pop(generation, None)
        if isinstance(exc, InputShapeError) and request is not None:
            self.shape_needed.emit(*request, exc)
        else:
            self.failed.emit(exc)
