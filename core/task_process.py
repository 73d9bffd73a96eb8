"""`TaskProcess`: a long-lived child process that runs core tasks for one open model.

Why a process and not a thread: onnx, protobuf and onnxruntime's session set-up hold Python's interpreter
lock for tens to hundreds of milliseconds at a time, so a worker *thread* doing optimization freezes the
window in bursts, however carefully it yields. In a child process the window's interpreter is never
blocked, a crash inside a native library ends the child instead of the application, and the child keeps
its warm state (the model, cached calibration ranges) from one edit to the next.

The parent side is a task generator like any other (`run` yields the child's `Progress` and returns its
result), so the GUI drives it with the same runner as in-process tasks. Closing the generator cancels the
job in the child at its next yield. The standard library's `multiprocessing` (spawn start method, which is
safe beside Qt's threads) carries the messages; objects cross as pickles between our own two processes.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import itertools
import multiprocessing
import os
import pickle
import queue
import struct
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import onnx

from slimscope.core.errors import CancelledError, OptimizeError, SlimscopeError
from slimscope.core.model import LoadedModel
from slimscope.core.tasks import Task
from slimscope.core.worker_jobs import JOBS, ChildState, set_model

_POLL_S = 0.05  # how often a waiting task checks that the child is still alive
_COUNT = struct.Struct("!I")


# ---------------------------------------------------------------------- messages
# Models travel as out-of-band buffers (pickle protocol 5): the receiver reads their bytes with the
# interpreter lock released and only parses them while holding it. A plain pickle of a 45 MB model held
# the window's interpreter for ~60 ms in one piece.


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj: object) -> Any:
        if isinstance(obj, onnx.ModelProto):
            return _model_from_buffer, (pickle.PickleBuffer(obj.SerializeToString()),)
        return NotImplemented


def _model_from_buffer(buffer: Any) -> onnx.ModelProto:
    model = onnx.ModelProto()
    model.ParseFromString(memoryview(buffer))
    return model


def send_message(conn: Connection, message: object) -> None:
    buffers: list[pickle.PickleBuffer] = []
    stream = io.BytesIO()
    _Pickler(stream, protocol=5, buffer_callback=buffers.append).dump(message)
    conn.send_bytes(_COUNT.pack(len(buffers)) + stream.getvalue())
    for buffer in buffers:
        conn.send_bytes(buffer.raw())


def receive_message(conn: Connection) -> Any:
    head = conn.recv_bytes()
    (count,) = _COUNT.unpack_from(head)
    buffers = [conn.recv_bytes() for _ in range(count)]
    return pickle.loads(memoryview(head)[_COUNT.size :], buffers=buffers)


_UNKNOWN = object()  # the child's model while an open job may be replacing it


def _job_function(job: str) -> Callable[..., Task[Any]]:
    """A job of `core/worker_jobs.py` by name, or "package.module:function" (tests use their own)."""
    if job in JOBS:
        return JOBS[job]
    module, _, name = job.partition(":")
    return getattr(importlib.import_module(module), name)


class TaskProcess:
    """One child process, started on first use and again after it died; at most one job at a time."""

    def __init__(self, name: str = "slimscope-worker") -> None:
        self.name = name
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._send_lock = threading.Lock()
        self._mailboxes: dict[int, queue.SimpleQueue] = {}
        self._ids = itertools.count(1)
        self._model: LoadedModel | None = None
        self._model_in_child: object = None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def set_model(self, loaded: LoadedModel | None) -> None:
        """The model later jobs work on; it is sent to the child with the next job."""
        self._model = loaded

    def start(self) -> None:
        """Start the child now (it takes a second to import its libraries) instead of at the first job."""
        with self._send_lock:
            self._ensure_child()

    def run(self, job: str, *args: Any) -> Task[Any]:
        """Run `JOBS[job](state, *args)` in the child; yields its progress, returns its result."""
        if job not in JOBS and ":" not in job:
            raise ValueError(f"unknown job {job!r}")
        job_id = next(self._ids)
        mailbox: queue.SimpleQueue = queue.SimpleQueue()
        for older in self._mailboxes.values():
            older.put(("superseded", None))
        self._mailboxes = {job_id: mailbox}  # replies to older jobs are dropped from now on
        with self._send_lock:
            conn = self._ensure_child()
            if job == "open":
                self._model_in_child = _UNKNOWN  # a successful open replaces it, a failed one keeps it
            elif self._model_in_child is not self._model:
                self._send(("model", self._model))
                self._model_in_child = self._model
            self._send(("run", job_id, job, args))
        finished = False
        try:
            while True:
                try:
                    kind, payload = mailbox.get(timeout=_POLL_S)
                except queue.Empty:
                    if not self.alive or conn.closed:
                        raise self._died() from None
                    continue
                if kind == "progress":
                    yield payload
                elif kind == "return":
                    finished = True
                    if job == "open":  # the child now holds this very model: no need to send it back
                        self._model = self._model_in_child = payload.loaded
                    return payload
                elif kind == "superseded":
                    raise CancelledError("A newer job replaced this one.")
                elif kind == "error":
                    finished = True
                    raise payload
                elif kind == "died":
                    finished = True
                    raise self._died()
        finally:
            if not finished:
                self._cancel(job_id)

    def close(self, timeout: float = 3.0) -> None:
        """Ask the child to quit; terminate it if it does not within `timeout` seconds."""
        process, self._process = self._process, None
        if process is None:
            return
        with self._send_lock:
            try:
                if self._conn is not None:
                    send_message(self._conn, ("quit",))
            except (OSError, ValueError):
                pass
        process.join(timeout)
        if process.is_alive():
            process.terminate()
            process.join(timeout)
        if self._conn is not None:
            self._conn.close()
        self._conn, self._model_in_child = None, None

    # ------------------------------------------------------------------ parent internals

    def _ensure_child(self) -> Connection:
        if self.alive and self._conn is not None:
            return self._conn
        if self._conn is not None:
            self._conn.close()
        context = multiprocessing.get_context("spawn")
        parent_end, child_end = context.Pipe()
        process = context.Process(target=_child_main, args=(child_end,), name=self.name, daemon=True)
        process.start()
        child_end.close()
        self._process, self._conn, self._model_in_child = process, parent_end, None
        threading.Thread(
            target=self._receive, args=(parent_end,), name=f"{self.name}-receiver", daemon=True
        ).start()
        return parent_end

    def _receive(self, conn: Connection) -> None:
        """Route the child's replies to the mailbox of the job they belong to (one thread per child)."""
        while True:
            try:
                kind, job_id, payload = receive_message(conn)
            except (EOFError, OSError, ValueError):
                for box in list(self._mailboxes.values()):
                    box.put(("died", None))
                return
            except Exception as exc:  # noqa: BLE001 - a reply that does not unpickle ends that job
                unreadable = OptimizeError(f"The optimizer's answer was unreadable: {exc}")
                for box in list(self._mailboxes.values()):
                    box.put(("error", unreadable))
                continue
            mailbox = self._mailboxes.get(job_id)
            if mailbox is not None:
                mailbox.put((kind, payload))

    def _send(self, message: tuple) -> None:
        assert self._conn is not None
        try:
            send_message(self._conn, message)
        except (OSError, ValueError) as exc:
            raise self._died() from exc

    def _cancel(self, job_id: int) -> None:
        with self._send_lock:
            if self.alive and self._conn is not None:
                with contextlib.suppress(OSError, ValueError):
                    send_message(self._conn, ("cancel", job_id))

    def _died(self) -> OptimizeError:
        """Forget the dead (or dying) child, so that the next job starts a new one; the error to raise."""
        process, self._process = self._process, None
        code = None
        if process is not None:
            process.join(1.0)  # its pipe closes a moment before the process is reaped
            if process.is_alive():
                process.kill()
                process.join(1.0)
            code = process.exitcode
        how = f" (signal {-code})" if code is not None and code < 0 else ""
        self._model_in_child = None
        return OptimizeError(
            f"The optimizer process stopped unexpectedly{how}, probably a crash in a native library; "
            "the next edit starts a new one."
        )


# ---------------------------------------------------------------------- child side


def _child_main(conn: Connection) -> None:
    # Background work yields the CPU to the window: on a 2-core machine the window's thread otherwise waits
    # for a core while the optimizer runs. (Not on every platform: then the child just runs at normal priority.)
    with contextlib.suppress(AttributeError, OSError):
        os.nice(10)
    state = ChildState()
    inbox: deque = deque()
    while True:
        try:
            message = inbox.popleft() if inbox else receive_message(conn)
        except (EOFError, OSError):
            return
        kind = message[0]
        if kind == "quit":
            return
        try:
            if kind == "model":
                set_model(state, message[1])
            elif kind == "run" and not _run_job(conn, state, inbox, *message[1:]):
                return
        except (BrokenPipeError, ConnectionResetError, EOFError):
            return  # the window went away mid-job: nobody is left to answer


def _run_job(conn: Connection, state: ChildState, inbox: deque, job_id: int, job: str, args: tuple) -> bool:
    """Run one job, replying as it goes; False when the parent asked the child to quit meanwhile."""
    task = None
    try:
        task = _job_function(job)(state, *args)
        while True:
            progress = next(task)
            while conn.poll():  # cancel, quit or a newer job: the parent has moved on
                message = receive_message(conn)
                if message[0] == "cancel" and message[1] == job_id:
                    task.close()
                    return True
                if message[0] != "cancel":
                    inbox.append(message)
            if inbox:
                task.close()
                return all(message[0] != "quit" for message in inbox)
            send_message(conn, ("progress", job_id, progress))
    except StopIteration as stop:
        _reply(conn, ("return", job_id, stop.value))
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the parent as the job's error
        if not isinstance(exc, SlimscopeError):
            traceback.print_exc(file=sys.stderr)
        _reply(conn, ("error", job_id, _portable(exc)))
    return True


def _reply(conn: Connection, message: tuple) -> None:
    try:
        send_message(conn, message)  # pickled whole before anything is sent: a failure sends nothing
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        error = OptimizeError(f"The optimizer's result could not be sent back: {exc}")
        send_message(conn, ("error", message[1], error))


def _portable(exc: BaseException) -> BaseException:
    """`exc` if it survives a pickle round trip, else an `OptimizeError` with its message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any exception class that does not pickle cleanly
        text = str(exc) or type(exc).__name__
        return SlimscopeError(text) if isinstance(exc, SlimscopeError) else OptimizeError(text)
