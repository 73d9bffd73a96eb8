"""The child side of `TaskProcess` (core/task_process.py): the messages both sides exchange, and the loop
that runs named jobs in the worker process, replying with progress, results and errors as it goes.

A failure inside a job goes back as the job's error; one that means memory ran out goes back as a plain
`MemoryError`, which the parent turns into a sentence naming the job and the limit. Anything harder (a
signal, the kernel's out-of-memory killer) ends this process, and the parent words that from its exit code.
"""

from __future__ import annotations

import importlib
import io
import pickle
import struct
import sys
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import onnx

from slimscope.core.errors import OptimizeError, SlimscopeError
from slimscope.core.isolation import is_out_of_memory, prepare_child
from slimscope.core.tasks import Task
from slimscope.core.user_files import clear_private_working_directory
from slimscope.core.worker_jobs import JOBS, ChildState, set_model

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


def _job_function(job: str) -> Callable[..., Task[Any]]:
    """A job of `core/worker_jobs.py` by name, or "package.module:function" (tests use their own)."""
    if job in JOBS:
        return JOBS[job]
    module, _, name = job.partition(":")
    return getattr(importlib.import_module(module), name)


# ---------------------------------------------------------------------- the job loop


@dataclass(frozen=True)
class ChildSettings:
    memory_limit: int | None
    temp_dir: str
    echo_tracebacks: bool


def child_main(conn: Connection, settings: ChildSettings) -> None:
    prepare_child(settings.memory_limit, settings.temp_dir)
    from slimscope.core.quiet_output import quiet_library_output

    quiet_library_output()  # no library warnings or log lines on the command's terminal
    send_message(conn, ("ready", 0, None))  # a child that dies before this could not start at all
    state = ChildState()
    inbox: deque = deque()
    cancelled: set[int] = set()  # jobs cancelled while they waited in the inbox
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
            elif kind == "cancel":
                cancelled.add(message[1])
            elif kind == "run" and message[1] in cancelled:
                send_message(conn, ("cancelled", message[1], None))
            elif kind == "run":
                _, job_id, job, args = message
                if not _run_job(conn, state, inbox, cancelled, job_id, job, args, settings):
                    return
        except (BrokenPipeError, ConnectionResetError, EOFError):
            return  # the window went away mid-job: nobody is left to answer


def _run_job(
    conn: Connection, state: ChildState, inbox: deque, cancelled: set[int], job_id: int, job: str,
    args: tuple, settings: ChildSettings,
) -> bool:  # fmt: skip
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
                    send_message(conn, ("cancelled", job_id, None))
                    return True
                if message[0] == "cancel":
                    cancelled.add(message[1])
                else:
                    inbox.append(message)
            if inbox:
                task.close()
                send_message(conn, ("cancelled", job_id, None))
                return all(message[0] != "quit" for message in inbox)
            send_message(conn, ("progress", job_id, progress))
    except StopIteration as stop:
        _reply(conn, ("return", job_id, stop.value))
        return True
    except Exception as exc:  # noqa: BLE001 - every failure goes back to the parent as the job's error
        error = _error_for_parent(exc, settings.echo_tracebacks)
    finally:
        clear_private_working_directory()  # what onnxruntime left in the working folder (model copies)
    # Replying out of the handler: after running out of memory, what the job held has been released.
    _reply(conn, ("error", job_id, error))
    return True


def _error_for_parent(exc: Exception, echo: bool) -> BaseException:
    """A plain MemoryError when memory ran out (the parent words it), else the error, picklable, with the
    child's traceback attached as a note when it is not one of our own sentences."""
    if is_out_of_memory(exc):
        return MemoryError()
    if not isinstance(exc, SlimscopeError):
        if echo:
            traceback.print_exc(file=sys.stderr)
        exc.add_note("".join(traceback.format_exception(exc)).rstrip())
    return _portable(exc)


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
