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


# ---------------------------------------------------------------- hostile jobs for tests/core/test_isolation.py


def crash(state, *args):
    """Segfault whatever the arguments: stands in for any job (open, optimize, ...) a native library crashes."""
    yield Progress(None, "about to crash")
    os.kill(os.getpid(), signal.SIGSEGV)
    yield Progress(None, "not reached")


def allocate_forever(state, *args):
    """Touch 100 MB after 100 MB until something stops it."""
    held = []
    while True:
        held.append(bytearray(100 * 2**20))
        yield Progress(None, f"holding {len(held) * 100} MB")


def hang(state, *args):
    """A native call that never returns and never yields (time.sleep stands in for it)."""
    yield Progress(None, "hanging")
    while True:
        time.sleep(3600)


def fail_like_bad_alloc(state):
    raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : std::bad_alloc")
    yield


def temp_file_then_crash(state):
    """Leave a temporary file (its path as the partial result), then crash."""
    import tempfile

    with tempfile.NamedTemporaryFile(delete=False, suffix=".onnx") as handle:
        handle.write(b"half-written")
    yield Progress(None, "wrote", handle.name)
    os.kill(os.getpid(), signal.SIGSEGV)
    yield Progress(None, "not reached")


def memory_limit(state):
    """The child's address-space limit (soft), as the child sees it."""
    import resource

    yield Progress(None, "limit")
    return resource.getrlimit(resource.RLIMIT_AS)[0]


def hang_after_marking(state, path, *args):
    """Create `<path>.hanging` once the job runs (a test waits for it), then hang like `hang`."""
    from pathlib import Path

    Path(f"{path}.hanging").touch()
    yield Progress(None, "hanging")
    while True:
        time.sleep(3600)
