"""Run many independent evaluations in worker processes, here or on a Ray cluster, results as they finish.

Callers give `map_unordered` a module-level function and plain-data (picklable) items. Large shared inputs
(a model's bytes, the data) travel in a `WorkerContext`: each worker runs `context.setup(context.payload)`
once and keeps what it returns, then calls `fn(state, item)` per item, so the payload crosses the process
boundary once per worker instead of once per task.

Items are taken from the iterable lazily (at most two per worker in flight), so a caller can stop feeding
work (a time budget) by ending its iterable. Closing the iterator `map_unordered` returns cancels: queued
items are dropped and workers busy with an item are terminated (the executor starts fresh ones next time).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import socket
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import cache
from typing import Any, Protocol

from slimscope.core.errors import SlimscopeError

_IN_FLIGHT_PER_WORKER = 2  # one running, one queued: a worker never waits for the parent between items


class ExecutorError(SlimscopeError):
    """Workers cannot be started or reached (Ray missing, cluster unreachable), or one died."""


@dataclass(frozen=True, eq=False)  # compared by identity: a pool is kept for the context it started with
class WorkerContext:
    """What every worker builds its state from, once: `setup(payload)`; both must be picklable
    (`setup` module-level, `payload` plain data)."""

    setup: Callable[[Any], Any]
    payload: Any


class Executor(Protocol):
    workers: int  # how many items run at once

    @property
    def threads_per_worker(self) -> int:
        """Compute threads each worker should use, so that workers together do not oversubscribe."""
        ...

    def map_unordered(
        self, fn: Callable[..., Any], items: Iterable[Any], context: WorkerContext | None = None
    ) -> Generator[Any, None, None]: ...

    def close(self) -> None: ...


# --- local processes ----------------------------------------------------------------------------

_NO_STATE = object()
_worker_state: Any = _NO_STATE  # in a worker process only: what context.setup returned
_worker_error: BaseException | None = None


def _init_worker(context: WorkerContext | None) -> None:
    """Pool initializer. A failing setup is kept and raised by each call: an initializer that raises
    breaks the whole pool with a message that does not say why."""
    global _worker_state, _worker_error
    from slimscope.core.user_files import enter_private_working_directory

    enter_private_working_directory()  # onnxruntime saves files where it stands (core/user_files.py)
    from slimscope.core.quiet_output import quiet_library_output

    quiet_library_output()  # no library warnings or log lines on the command's terminal
    if context is None:
        return
    try:
        _worker_state = context.setup(context.payload)
    except BaseException as exc:
        _worker_error = exc


def _call_in_worker(fn: Callable[..., Any], item: Any) -> Any:
    if _worker_error is not None:
        raise _worker_error
    from slimscope.core.user_files import clear_private_working_directory

    try:
        return fn(item) if _worker_state is _NO_STATE else fn(_worker_state, item)
    finally:
        clear_private_working_directory()


class LocalExecutor:
    """A `ProcessPoolExecutor` with the spawn context (no forked copies of the parent's threads or of a
    GUI), started on first use and kept while the same `WorkerContext` is used."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or os.cpu_count() or 1)
        self._pool: ProcessPoolExecutor | None = None
        self._context: WorkerContext | None = None

    @property
    def threads_per_worker(self) -> int:
        return max(1, (os.cpu_count() or 1) // self.workers)

    def map_unordered(
        self, fn: Callable[..., Any], items: Iterable[Any], context: WorkerContext | None = None
    ) -> Generator[Any, None, None]:
        return self._results(fn, items, context)

    def _results(
        self, fn: Callable[..., Any], items: Iterable[Any], context: WorkerContext | None
    ) -> Generator[Any, None, None]:
        pool = self._pool_for(context)
        source = iter(items)
        pending: set[Future] = set()
        finished = False
        try:
            while True:
                for item in source:
                    pending.add(pool.submit(_call_in_worker, fn, item))
                    if len(pending) >= _IN_FLIGHT_PER_WORKER * self.workers:
                        break
                if not pending:
                    finished = True
                    return
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield _result(future)
        finally:
            if not finished:  # cancelled (closed) or failed, with work outstanding or still to submit
                self._kill()

    def _pool_for(self, context: WorkerContext | None) -> ProcessPoolExecutor:
        if self._pool is None or self._context is not context:
            self.close()
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(context,),
            )
            self._context = context
        return self._pool

    def _kill(self) -> None:
        """Stop the pool now, terminating workers busy with an item. Python 3.14 has
        `ProcessPoolExecutor.terminate_workers()`; before it, the pool's process table is the only handle."""
        pool, self._pool, self._context = self._pool, None, None
        if pool is None:
            return
        processes = list((getattr(pool, "_processes", None) or {}).values())  # shutdown() forgets them
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            with contextlib.suppress(Exception):
                process.terminate()
        for process in processes:
            process.join(5)

    def close(self) -> None:
        """Let running items finish, drop queued ones, and end the worker processes."""
        pool, self._pool, self._context = self._pool, None, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _result(future: Future) -> Any:
    try:
        return future.result()
    except BrokenProcessPool:
        raise ExecutorError(
            "A worker process stopped unexpectedly (out of memory, or a crash in native code)."
        ) from None


# --- Ray -----------------------------------------------------------------------------------------


class _RayWorker:
    """One Ray actor: builds its state from the context once, then runs items."""

    def __init__(self, context: WorkerContext | None) -> None:
        _init_worker(context)

    def run(self, fn: Callable[..., Any], item: Any) -> Any:
        return _call_in_worker(fn, item)


@cache
def _ray_worker_class(ray: Any) -> Any:
    return ray.remote(num_cpus=1)(_RayWorker)


class RayExecutor:
    """Ray actors, one per worker, each given the context once (through `ray.put`).

    `address`: "auto" (the cluster this machine belongs to), "HOST:PORT" (a head node's GCS address) or
    "local" (a private single-machine instance bound to 127.0.0.1). An instance already initialized in
    this process is used as it is. Workers import slimscope, so it must be installed on every node.
    """

    def __init__(self, address: str = "auto", workers: int | None = None) -> None:
        self._ray = _import_ray()
        self._owns_ray = False
        if not self._ray.is_initialized():
            _connect(self._ray, address)
            self._owns_ray = True
        cpus = int(self._ray.cluster_resources().get("CPU", 1))
        # An actor needs a CPU of its own: more actors than the cluster's CPUs would wait forever.
        self.workers = max(1, min(workers or cpus, cpus))
        self._actors: list[Any] = []
        self._context: WorkerContext | None = None

    @property
    def threads_per_worker(self) -> int:
        return 1  # one actor per CPU the cluster offers

    def map_unordered(
        self, fn: Callable[..., Any], items: Iterable[Any], context: WorkerContext | None = None
    ) -> Generator[Any, None, None]:
        return self._results(fn, items, context)

    def _results(
        self, fn: Callable[..., Any], items: Iterable[Any], context: WorkerContext | None
    ) -> Generator[Any, None, None]:
        ray = self._ray
        idle = list(self._actors_for(context))
        running: dict[Any, Any] = {}  # object ref → the actor computing it
        source = iter(items)
        try:
            while True:
                for item in source:
                    actor = idle.pop()
                    running[actor.run.remote(fn, item)] = actor
                    if not idle:
                        break
                if not running:
                    return
                (ready,), _ = ray.wait(list(running), num_returns=1)
                idle.append(running.pop(ready))
                yield self._get(ready)
        finally:
            if running:  # cancelled or failed: stop the actors still busy
                self._kill_actors()

    def _get(self, ref: Any) -> Any:
        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, SlimscopeError):
                raise cause from None
            raise ExecutorError(f"A Ray worker failed: {type(cause).__name__}: {cause}") from None
        except ray.exceptions.RayError as exc:
            raise ExecutorError(f"A Ray worker stopped: {_first_line(exc)}.") from None

    def _actors_for(self, context: WorkerContext | None) -> list[Any]:
        if not self._actors or self._context is not context:
            self._kill_actors()
            shared = self._ray.put(context)  # stored once; each actor receives it once
            worker = _ray_worker_class(self._ray)
            self._actors = [worker.remote(shared) for _ in range(self.workers)]
            self._context = context
        return self._actors

    def _kill_actors(self) -> None:
        actors, self._actors, self._context = self._actors, [], None
        for actor in actors:
            with contextlib.suppress(Exception):
                self._ray.kill(actor)

    def close(self) -> None:
        """End the actors, and Ray itself when this executor started it."""
        self._kill_actors()
        if self._owns_ray:
            self._ray.shutdown()
            self._owns_ray = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ExecutorError("Running on Ray needs the ray package: pip install 'slimscope[ray]'.") from None
    return ray


def _connect(ray: Any, address: str) -> None:
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
    if address == "local":
        options["_node_ip_address"] = "127.0.0.1"
    elif address != "auto":
        _check_reachable(address)
    try:
        ray.init(address=address, **options)
    except Exception as exc:  # ConnectionError, ValueError, RuntimeError depending on what failed
        raise ExecutorError(f"Cannot reach the Ray cluster at '{address}': {_first_line(exc)}.") from None


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds on an address nobody listens on; Ray itself retries for about a minute."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ExecutorError(f"The Ray address '{address}' is not 'auto', 'local' or HOST:PORT.")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ExecutorError(f"Cannot reach the Ray cluster at '{address}': {reason}.") from None


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__).rstrip(".")
