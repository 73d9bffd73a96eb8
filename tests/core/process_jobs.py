"""Jobs for the task-process tests: the child imports this module by name (tests/core is on sys.path)."""

import os
import signal
import time

from slimscope.core.errors import DatasetError
from slimscope.core.tasks import Progress


def count(state, n, delay=0.0):
    for i in range(n):
        if delay:
            time.sleep(delay)
        yield Progress((i + 1) / n, f"step {i + 1}", i)
    return n


def segfault(state):
    os.kill(os.getpid(), signal.SIGSEGV)
    yield Progress(None, "not reached")


def fail(state, message):
    raise DatasetError(message)
    yield  # a generator


class _Unpicklable(Exception):
    def __init__(self, a, b):  # pickle calls cls(*args) with one argument: it cannot rebuild this
        super().__init__(f"{a} and {b}")


def fail_oddly(state):
    raise _Unpicklable("this", "that")
    yield


def model_name(state):
    yield Progress(None, "looking")
    return None if state.loaded is None else state.loaded.model.graph.name


def child_pid(state):
    yield Progress(None, "pid")
    return os.getpid()
