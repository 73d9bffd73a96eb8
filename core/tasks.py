"""Long work as generators: they yield `Progress` and return their result; closing one cancels it.

The GUI runs these generators in a worker thread (superqt's `create_worker`), the CLI runs them with
`run_sync`. A blocking native call that cannot stop between yields runs in a child process through
`run_in_child`, so that it can be terminated on cancel and a crash in it is an error, not a dead app.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import IO, Any, TypeVar

from slimscope.core import errors
from slimscope.core.errors import ConversionError

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """How far a task is: `fraction` in [0, 1] (None when unknown), a message, an optional partial result."""

    fraction: float | None
    message: str
    partial: Any = None


Task = Generator[Progress, None, T]


def scaled(
    task: Task[T], start: float, end: float, partial: Callable[[Any], Any] | None = lambda value: value
) -> Task[T]:
    """Re-yield a sub-task's progress with its fraction mapped into [start, end] of the caller's; each
    partial result goes through `partial` (None drops them). Closing this closes the sub-task."""
    try:
        while True:
            try:
                progress = next(task)
            except StopIteration as stop:
                return stop.value
            fraction = None if progress.fraction is None else start + (end - start) * progress.fraction
            value = None if partial is None or progress.partial is None else partial(progress.partial)
            yield Progress(fraction, progress.message, value)
    finally:
        task.close()


def run_sync(task: Task[T], on_progress: Callable[[Progress], None] | None = None) -> T:
    """Drive a task generator to its end and return its result."""
    while True:
        try:
            progress = next(task)
        except StopIteration as stop:
            return stop.value
        if on_progress is not None:
            on_progress(progress)


def run_in_child(
    module: str,
    args: list[str],
    *,
    message: str,
    timeout: float | None = None,
    poll_interval: float = 0.1,
) -> Task[dict]:
    """Run `python -m module *args` in a child process and return the JSON object it prints last.

    The child reports failure by printing `{"error": "<one sentence>", "error_type": "<name>"}` and
    exiting non-zero; that becomes the named `SlimscopeError` subclass. A crash (signal, no JSON answer)
    becomes a `ConversionError`. Closing the generator terminates the child.
    """
    # The child learns who started it, to end with that process (see torch_convert.die_with_parent).
    env = dict(os.environ, PYTHONUNBUFFERED="1", SLIMSCOPE_PARENT_PID=str(os.getpid()))
    child = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # its own process group: ending it ends whatever it started too
    )
    started = time.monotonic()
    try:
        # Both pipes are drained as the child runs: a model that prints more than a pipe holds (64 kB)
        # would otherwise block its conversion forever. Only the tails are kept, for the answer and errors.
        stdout, stderr = _Tail(child.stdout), _Tail(child.stderr)
        while child.poll() is None:
            elapsed = time.monotonic() - started
            if timeout is not None and elapsed > timeout:
                raise ConversionError(f"{message} took longer than {timeout:.0f} s and was stopped.")
            yield Progress(None, f"{message} ({elapsed:.0f} s)")
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(poll_interval)
    except BaseException:  # cancelled (GeneratorExit), timed out, Ctrl-C
        _terminate(child)
        raise
    finally:
        _kill_group(child.pid, signal.SIGKILL)  # what the child left running (its pipes then close)
    return _read_child_answer(child.returncode, stdout.text(), stderr.text(), message)


class _Tail(threading.Thread):
    """Reads a child's pipe to its end in a thread, keeping the last `size` bytes."""

    def __init__(self, pipe: IO[bytes] | None, size: int = 64 * 1024) -> None:
        super().__init__(name="child-output", daemon=True)
        assert pipe is not None
        self._pipe, self._size, self._kept = pipe, size, bytearray()
        self.start()

    def run(self) -> None:
        with self._pipe:
            while chunk := os.read(self._pipe.fileno(), 65536):
                self._kept += chunk
                if len(self._kept) > 2 * self._size:
                    del self._kept[: -self._size]

    def text(self, timeout: float = 5.0) -> str:
        self.join(timeout)  # the pipe ends when the child's process group has
        return bytes(self._kept[-self._size :]).decode("utf-8", "replace")


def _terminate(child: subprocess.Popen) -> None:
    """End the child and its process group: politely, then for sure."""
    if child.poll() is None:
        _kill_group(child.pid, signal.SIGTERM)
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            _kill_group(child.pid, signal.SIGKILL)
            child.wait()


def _kill_group(pid: int, signal_number: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError, AttributeError):  # (no groups on Windows)
        os.killpg(pid, signal_number)


def _read_child_answer(returncode: int, stdout: str, stderr: str, message: str) -> dict:
    answer = None
    for line in reversed(stdout.strip().splitlines()):
        try:
            answer = json.loads(line)
            break
        except ValueError:
            continue
    if isinstance(answer, dict) and "error" in answer:
        error_type = getattr(errors, str(answer.get("error_type", "")), ConversionError)
        if not (isinstance(error_type, type) and issubclass(error_type, errors.SlimscopeError)):
            error_type = ConversionError
        raise error_type(str(answer["error"]))
    if returncode != 0 or not isinstance(answer, dict):
        last = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit code {returncode}"
        if returncode < 0:
            last = f"it was killed by signal {-returncode}"
        raise ConversionError(f"{message} failed: {last}")
    return answer
