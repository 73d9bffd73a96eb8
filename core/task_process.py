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
import itertools
import multiprocessing
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from pathlib import PurePath
from typing import Any

from slimscope.core.errors import CancelledError, OptimizeError, SlimscopeError, WorkerCrashError
from slimscope.core.isolation import (
    DEFAULT_MEMORY_LIMIT,
    DEFAULT_READ_TIME_LIMIT_S,
    Activity,
    activity_for,
    ended_error,
    memory_error,
    oom_kill_count,
    timeout_error,
)
from slimscope.core.model import LoadedModel
from slimscope.core.task_child import ChildSettings, child_main, receive_message, send_message
from slimscope.core.tasks import Task
from slimscope.core.user_files import absolute
from slimscope.core.worker_jobs import JOBS

_POLL_S = 0.05  # how often a waiting task checks that the child is still alive
_WATCH_S = 0.5  # how often the receiver looks for a child hanging in an abandoned job
# How long a job nobody waits for may run on before its child is ended: an open replaces the child's
# model anyway, so a new child costs nothing; other jobs may be in a long native step of a large model,
# and a new child loses the warm caches.
_GRACE_S = {"open": 2.0, "load": 2.0}
_DEFAULT_GRACE_S = 30.0
_START_S = 60.0  # how long a new child may take to start before its first job's time limit runs
DEFAULT_TIME_LIMITS = {"open": DEFAULT_READ_TIME_LIMIT_S, "load": DEFAULT_READ_TIME_LIMIT_S}


_UNKNOWN = object()  # the child's model while an open job may be replacing it


class TaskProcess:
    """One child process, started on first use and again after it died; at most one job at a time.

    `memory_limit` (bytes, None for none) caps the child's address space; `time_limits` gives jobs by
    name a limit in seconds (reading a file: 10 minutes unless said otherwise). A crash, a runaway
    allocation or an expired limit ends the child and raises a `WorkerCrashError` saying what the job was
    doing; the next job starts a new child. A job whose caller stopped waiting (cancelled or superseded)
    and that does not stop at its next yield within a grace period is ended the same way: a hang inside a
    native library never blocks the jobs after it.
    """

    def __init__(
        self,
        name: str = "slimscope-worker",
        *,
        memory_limit: int | None = DEFAULT_MEMORY_LIMIT,
        time_limits: Mapping[str, float] | None = None,
        echo_tracebacks: bool = True,
    ) -> None:
        self.name = name
        self.memory_limit = memory_limit
        self.time_limits = dict(DEFAULT_TIME_LIMITS if time_limits is None else time_limits)
        self.echo_tracebacks = echo_tracebacks  # unexpected errors in the child also go to its stderr
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._temp_dir: str | None = None  # the child's TMPDIR: removed with it, whatever it left there
        self._oom_kills_at_start: int | None = None
        self._send_lock = threading.Lock()
        self._mailboxes: dict[int, queue.SimpleQueue] = {}
        self._ids = itertools.count(1)
        self._model: LoadedModel | None = None
        self._model_in_child: object = None
        self._unfinished: dict[int, tuple[Connection, str]] = {}  # sent to a child that has not ended them
        self._abandoned: dict[int, float] = {}  # job id → when to end its child if it still runs it
        self._replaceable: Connection | None = None  # a child ended for hanging: its jobs go to a new one
        self._ready: Connection | None = None  # the newest child that said it started, and when
        self._ready_at = 0.0
        self._receiver: threading.Thread | None = None

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

    def run(
        self, job: str, *args: Any, timeout: float | None = None, activity: Activity | None = None
    ) -> Task[Any]:
        """Run `JOBS[job](state, *args)` in the child; yields its progress, returns its result.

        `timeout`: seconds before the child is ended (None: this process's limit for `job`, 0: none).
        `activity` names what the job does in error sentences (default: by the job's name)."""
        if job not in JOBS and ":" not in job:
            raise ValueError(f"unknown job {job!r}")
        # The child works in a private folder (core/user_files.py): a relative path means the same file there.
        args = tuple(absolute(arg) if isinstance(arg, PurePath) else arg for arg in args)
        limit = (self.time_limits.get(job) if timeout is None else timeout) or None
        doing = activity or activity_for(job, args)
        job_id = next(self._ids)
        mailbox: queue.SimpleQueue = queue.SimpleQueue()
        for older_id, older in self._mailboxes.items():
            older.put(("superseded", None))
            self._abandon(older_id, job)  # (replacing a job: the two of them decide how long it may run on)
        self._mailboxes = {job_id: mailbox}  # replies to older jobs are dropped from now on
        conn = self._submit(job_id, job, args)
        sent_at = time.monotonic()
        finished = False
        try:
            while True:
                try:
                    kind, payload = mailbox.get(timeout=_POLL_S)
                except queue.Empty:
                    kind, payload = "", None
                if limit is not None and time.monotonic() > self._deadline(conn, sent_at, limit):
                    finished = True
                    self._end_child()
                    raise timeout_error(doing, limit or 0)
                if (kind == "" and (conn.closed or not self.alive)) or (kind == "died" and payload is conn):
                    if conn is self._replaceable:  # ended for hanging in an older job: not this job's fault
                        conn = self._submit(job_id, job, args)
                        sent_at = time.monotonic()
                        continue
                    finished = True
                    raise self._ended(doing) from None
                if kind == "progress":
                    yield payload
                elif kind == "return":
                    finished = True
                    if job in _MODEL_OF:  # the child now holds this very model: no need to send it back
                        self._model = self._model_in_child = _MODEL_OF[job](payload)
                    return payload
                elif kind == "superseded":
                    raise CancelledError("A newer job replaced this one.")
                elif kind == "error":
                    finished = True
                    if isinstance(
                        payload, MemoryError
                    ):  # a native library may be left half-way: start afresh
                        self._end_child()
                        raise memory_error(doing, self.memory_limit)
                    raise payload
        finally:
            if not finished:
                self._cancel(job_id)

    def close(self, timeout: float = 3.0) -> None:
        """Ask the child to quit; terminate it if it does not within `timeout` seconds."""
        process, self._process = self._process, None  # a job still waiting on it ends as cancelled
        if process is None:
            return
        with self._send_lock, contextlib.suppress(OSError, ValueError):
            if self._conn is not None:
                send_message(self._conn, ("quit",))
        process.join(timeout)
        if process.is_alive():
            process.terminate()
            process.join(timeout)
        self._release(process)

    # ------------------------------------------------------------------ parent internals

    def _submit(self, job_id: int, job: str, args: tuple) -> Connection:
        """Send the job (and the model it works on, if the child lacks it); the connection it went to."""
        with self._send_lock:
            conn = self._ensure_child()
            if job in _MODEL_OF:
                self._model_in_child = _UNKNOWN  # a successful open replaces it, a failed one keeps it
            elif self._model_in_child is not self._model:
                self._send(("model", self._model))
                self._model_in_child = self._model
            self._unfinished[job_id] = (conn, job)
            self._send(("run", job_id, job, args))
        return conn

    def _ensure_child(self) -> Connection:
        if self.alive and self._conn is not None:
            return self._conn
        self._end_child()
        context = multiprocessing.get_context("spawn")
        parent_end, child_end = context.Pipe()
        self._temp_dir = tempfile.mkdtemp(prefix=f"{self.name}-")
        settings = ChildSettings(self.memory_limit, self._temp_dir, self.echo_tracebacks)
        process = context.Process(target=child_main, args=(child_end, settings), name=self.name, daemon=True)
        self._oom_kills_at_start = oom_kill_count()
        process.start()
        child_end.close()
        self._process, self._conn, self._model_in_child = process, parent_end, None
        self._receiver = threading.Thread(
            target=self._receive, args=(parent_end, process), name=f"{self.name}-receiver", daemon=True
        )
        self._receiver.start()
        return parent_end

    def _receive(self, conn: Connection, process: multiprocessing.process.BaseProcess) -> None:
        """Route the child's replies to the mailbox of the job they belong to (one thread per child);
        between replies, end the child if it hangs in a job nobody waits for any more."""
        while True:
            try:
                if not conn.poll(_WATCH_S):
                    self._end_if_hanging(conn, process)
                    continue
                kind, job_id, payload = receive_message(conn)
            except (EOFError, OSError, ValueError):
                for box in list(self._mailboxes.values()):
                    box.put(("died", conn))
                return
            except Exception as exc:  # noqa: BLE001 - a reply that does not unpickle ends that job
                unreadable = OptimizeError(f"The optimizer's answer was unreadable: {exc}")
                for box in list(self._mailboxes.values()):
                    box.put(("error", unreadable))
                continue
            if kind == "ready":
                self._ready, self._ready_at = conn, time.monotonic()
                continue
            if kind != "progress":  # the job has ended in the child
                self._unfinished.pop(job_id, None)
                self._abandoned.pop(job_id, None)
            mailbox = self._mailboxes.get(job_id)
            if mailbox is not None and kind != "cancelled":
                mailbox.put((kind, payload))

    def _deadline(self, conn: Connection, sent_at: float, limit: float) -> float:
        """When a job sent at `sent_at` runs out of time: its limit counts from when its child had started
        (importing the libraries takes a second or more on a busy machine), not from the sending."""
        if self._ready is conn:
            return max(sent_at, self._ready_at) + limit
        return sent_at + _START_S + limit

    def _end_if_hanging(self, conn: Connection, process: multiprocessing.process.BaseProcess) -> None:
        now = time.monotonic()
        for job_id, due in list(self._abandoned.items()):
            if self._unfinished.get(job_id, (None,))[0] is not conn:
                self._abandoned.pop(job_id, None)  # ended, or sent to an earlier child
            elif now > due:
                self._replaceable = conn
                process.kill()  # its pipe then closes: a job waiting behind it moves to a new child
                return

    def _abandon(self, job_id: int, next_job: str | None = None) -> None:
        """Nobody waits for this job any more: its child is ended if it does not stop within a grace."""
        sent = self._unfinished.get(job_id)
        if sent is not None:
            jobs = {sent[1], next_job}
            grace = min(_GRACE_S.get(name or "", _DEFAULT_GRACE_S) for name in jobs)
            due = time.monotonic() + grace
            self._abandoned[job_id] = min(due, self._abandoned.get(job_id, due))

    def _send(self, message: tuple) -> None:
        assert self._conn is not None
        # A child that is gone: the job waiting for its answer finds out, and says how it ended.
        with contextlib.suppress(OSError, ValueError):
            send_message(self._conn, message)

    def _cancel(self, job_id: int) -> None:
        with self._send_lock:
            if self.alive and self._conn is not None:
                with contextlib.suppress(OSError, ValueError):
                    send_message(self._conn, ("cancel", job_id))
        self._abandon(job_id)

    def _ended(self, doing: Activity) -> SlimscopeError:
        """The error for a child that ended by itself mid-job; it is forgotten, so the next job starts a
        new one."""
        process = self._process
        if process is None:
            return CancelledError("The worker process was closed.")  # by `close`, from another thread
        process.join(1.0)  # its pipe closes a moment before the process is reaped
        if self._receiver is not None:
            self._receiver.join(1.0)  # the replies it sent before it ended are read ("ready" among them)
        code = process.exitcode
        oom_before, oom_now = self._oom_kills_at_start, oom_kill_count()
        oom_killed = oom_before is not None and oom_now is not None and oom_now > oom_before
        started = self._ready is not None and self._ready is self._conn
        self._end_child()
        if not started:
            how = "" if code is None else f" (exit code {code})"
            return WorkerCrashError(f"The worker process for {doing.what} could not start{how}.")
        return ended_error(doing, code, self.memory_limit, oom_killed)

    def _end_child(self) -> None:
        process, self._process = self._process, None
        self._release(process)

    def _release(self, process: multiprocessing.process.BaseProcess | None) -> None:
        """Kill the child if it still runs, reap it, and remove its temporary folder."""
        if process is not None:
            if process.is_alive():
                process.kill()
            process.join(5.0)
        if self._conn is not None:
            self._conn.close()
            for job_id, (conn, _) in list(self._unfinished.items()):
                if conn is self._conn:
                    del self._unfinished[job_id]
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
        self._conn, self._temp_dir, self._model_in_child = None, None, None


# What an opening job returns → the model the child now holds.
_MODEL_OF: dict[str, Callable[[Any], LoadedModel]] = {
    "open": lambda report: report.loaded,
    "load": lambda m: m,
}
