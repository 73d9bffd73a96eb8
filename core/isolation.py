"""Limits for the worker processes that do the risky work, and the sentences a user sees when one ends.

Parsing, checking, session creation, quantization and PyTorch conversion of a file the user just picked
run in a child process (`core/task_process.py`). There a segfault, a runaway allocation or a hang ends
the child, not Slimscope; this module sets the child's limits and turns the way it ended into one
sentence naming what was being done ("onnx or onnxruntime crashed (SIGSEGV: segmentation fault) while
reading this model ...").

The memory limit is an address-space limit (`RLIMIT_AS`), the only one a process can put on itself
portably on Linux. It counts reserved, not touched, memory: a child that has imported onnx, onnxruntime
and PyTorch and run a session reserves about 1 GB (measured; see README), so the default leaves
real models plenty of room and stops only allocation without bound.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import tempfile
import threading
from dataclasses import dataclass

from slimscope.core.errors import SlimscopeError, WorkerCrashError, WorkerMemoryError, WorkerTimeoutError

GIB = 1024**3
MIN_DEFAULT_MEMORY_LIMIT = 8 * GIB
DEFAULT_READ_TIME_LIMIT_S = 600.0  # reading one model file (a TorchScript conversion included)
DEFAULT_OPTIMIZE_TIME_LIMIT_S = 3600.0  # applying a recipe (calibration included) on the command line


def default_memory_limit() -> int | None:
    """max(8 GiB, 3/4 of RAM), capped by RAM + swap; None when the platform does not say how much it has."""
    ram = _physical_memory()
    if ram is None:
        return None
    return min(max(MIN_DEFAULT_MEMORY_LIMIT, ram * 3 // 4), ram + _swap_total())


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return None


def _swap_total() -> int:
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("SwapTotal:"):
                return int(line.split()[1]) * 1024
    return 0


DEFAULT_MEMORY_LIMIT = default_memory_limit()


def prepare_child(memory_limit: int | None, temp_dir: str) -> None:
    """In a worker process before its first job: lower priority, limits, a private temporary folder
    (removed by the parent with the process, whatever a crash left there) that is also its working folder,
    and no life beyond the parent's."""
    # Background work yields the CPU to the window: on a 2-core machine the window's thread otherwise waits
    # for a core while the worker runs. (Not on every platform: then it just runs at normal priority.)
    with contextlib.suppress(AttributeError, OSError):
        os.nice(10)
    # Ctrl-C in a terminal reaches the whole process group: the parent cancels the job and ends the child.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    apply_limits(memory_limit)
    tempfile.tempdir = os.environ["TMPDIR"] = temp_dir  # for it and for the processes it starts
    # onnxruntime saves files into the working folder, following links there (core/user_files.py): the
    # child works in a folder of its own inside its temporary one, emptied after every job.
    from slimscope.core.user_files import enter_private_working_directory

    working = os.path.join(temp_dir, "cwd")
    os.makedirs(working, exist_ok=True)
    enter_private_working_directory(working)
    parent = multiprocessing.parent_process()
    if parent is not None:  # a parent killed outright cannot end a child hanging in a native call
        threading.Thread(target=_exit_with, args=(parent.sentinel,), name="parent-watch", daemon=True).start()


def _exit_with(parent_sentinel: int) -> None:
    multiprocessing.connection.wait([parent_sentinel])  # ready when the parent process has ended
    os._exit(1)


def apply_limits(memory_limit: int | None) -> None:
    """In the child, before any job: cap its address space and write no core dumps (a crash on a hostile
    file would otherwise leave a copy of the process's memory in the working folder)."""
    try:
        import resource
    except ImportError:  # Windows: no resource limits, the child runs unlimited
        return
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if memory_limit is None:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = memory_limit if hard == resource.RLIM_INFINITY else min(memory_limit, hard)
    with contextlib.suppress(ValueError, OSError):  # macOS refuses RLIMIT_AS: then there is no limit
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# ---------------------------------------------------------------------- what a job is doing


@dataclass(frozen=True)
class Activity:
    """What a job does, for the error sentences: `what` fits "while ___", `libraries` crash in it."""

    what: str
    libraries: str = "A native library"
    hint: str = ""  # the likely cause, said after a crash


_READING = Activity("reading this model", "onnxruntime or onnx", "the file is probably malformed")
_CONVERTING = Activity("converting this PyTorch file", "PyTorch or onnx", "the file is probably malformed")
_ON_THE_MODEL = "this model probably triggers a bug there"
ACTIVITIES = {
    "open": _READING,
    "load": _READING,
    "optimize": Activity("optimizing this model", "onnxruntime or onnx", _ON_THE_MODEL),
    "compare": Activity("optimizing and evaluating this model", "onnxruntime or onnx", _ON_THE_MODEL),
    "data": Activity("reading this data", "NumPy or Pillow", "the file is probably malformed"),
    "sensitivity": Activity("measuring layer sensitivity", "onnxruntime or onnx", _ON_THE_MODEL),
    "auto": Activity("searching for an automatic recipe", "onnxruntime or onnx", _ON_THE_MODEL),
    "finetune": Activity("retraining this model", "PyTorch or onnxruntime", _ON_THE_MODEL),
}
_TORCH_SUFFIXES = {".pt", ".pth", ".pt2", ".ts", ".ptl", ".torchscript"}


def activity_for(job: str, args: tuple) -> Activity:
    """The activity of `job` run with `args`: opening a PyTorch file is converting it."""
    activity = ACTIVITIES.get(job)
    if activity is None:
        return Activity(f"running {job}")
    if activity is _READING and args and str(args[0]).lower().endswith(tuple(_TORCH_SUFFIXES)):
        return _CONVERTING
    return activity


# ---------------------------------------------------------------------- the sentences


def format_gib(size: int) -> str:
    return f"{size / GIB:.1f} GiB"


def timeout_error(activity: Activity, seconds: float) -> WorkerTimeoutError:
    return WorkerTimeoutError(f"{_capital(activity.what)} took longer than {seconds:g} s and was stopped.")


def memory_error(activity: Activity, memory_limit: int | None, *, system: bool = False) -> WorkerMemoryError:
    """The job ran out of memory: past its limit, or (`system`) the computer's, when the kernel ended it."""
    if system or memory_limit is None:
        return WorkerMemoryError(
            f"{_capital(activity.what)} needed more memory than this computer had free and was stopped."
        )
    return WorkerMemoryError(
        f"{_capital(activity.what)} needed more than {format_gib(memory_limit)} of memory and was stopped."
    )


def ended_error(
    activity: Activity, exitcode: int | None, memory_limit: int | None, oom_killed: bool
) -> WorkerCrashError:
    """The error for a child that ended by itself mid-job with `exitcode` (negative: the signal)."""
    if exitcode is not None and exitcode < 0:
        number = -exitcode
        if number == signal.SIGKILL:
            if oom_killed:  # the kernel's out-of-memory killer ended it (its counter moved meanwhile)
                return memory_error(activity, memory_limit, system=True)
            return WorkerCrashError(
                f"The worker process was killed (SIGKILL) while {activity.what} and stopped unexpectedly; "
                "the system may have been short of memory."
            )
        name, description = _signal_words(number)
        hint = f"; {activity.hint}" if activity.hint else ""
        return WorkerCrashError(
            f"{activity.libraries} crashed ({name}: {description}) while {activity.what} and its worker "
            f"process stopped unexpectedly{hint}."
        )
    how = "" if exitcode is None else f" (exit code {exitcode})"
    hint = f"; {activity.hint}" if activity.hint else ""
    return WorkerCrashError(f"The worker process stopped unexpectedly{how} while {activity.what}{hint}.")


def _signal_words(number: int) -> tuple[str, str]:
    """("SIGSEGV", "segmentation fault") for 11: the name people search for and what it means."""
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"signal {number}", "an unknown signal"
    description = signal.strsignal(number) or name
    return name, description[0].lower() + description[1:]


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


# ---------------------------------------------------------------------- recognizing memory exhaustion

# How allocation failures read when a library turns them into a plain exception: C++'s std::bad_alloc
# (onnxruntime: "bad allocation"), PyTorch's allocator, onnxruntime's arena, errno ENOMEM, and Python's
# threads, whose stacks are the first thing an address-space limit refuses.
_OUT_OF_MEMORY = re.compile(
    r"bad_alloc|bad allocation|can't allocate memory|cannot allocate memory|failed to allocate memory"
    r"|out of memory|can't start new thread",
    re.IGNORECASE,
)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it was raised from, is an allocation that failed. Our own errors
    keep their sentence (a loader that caught a MemoryError already said which tensor was too large)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and not isinstance(current, SlimscopeError):
        seen.add(id(current))
        if isinstance(current, MemoryError) or _OUT_OF_MEMORY.search(str(current)):
            return True
        current = current.__cause__ or current.__context__
    return False


def oom_kill_count() -> int | None:
    """How many processes the kernel's out-of-memory killer has ended since boot (Linux), else None."""
    with contextlib.suppress(OSError, ValueError), open("/proc/vmstat", encoding="ascii") as vmstat:
        for line in vmstat:
            if line.startswith("oom_kill "):
                return int(line.split()[1])
    return None
