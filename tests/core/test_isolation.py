"""Process isolation: a job that segfaults, allocates without bound or hangs in its worker process is a
readable one-sentence error naming what was being done, the next job gets a fresh child, nothing is left
behind, and the command line turns each into one line, exit code 2 and no output file."""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slimscope.core import cli
from slimscope.core.errors import (
    CancelledError,
    DatasetError,
    ModelLoadError,
    OptimizeError,
    WorkerCrashError,
    WorkerMemoryError,
    WorkerTimeoutError,
)
from slimscope.core.isolation import (
    DEFAULT_MEMORY_LIMIT,
    GIB,
    activity_for,
    default_memory_limit,
    ended_error,
    is_out_of_memory,
)
from slimscope.core.recipe import template_recipe
from slimscope.core.recipe_files import save_recipe
from slimscope.core.task_process import TaskProcess
from slimscope.core.tasks import run_sync
from slimscope.resources import DEMO_MODEL

READING = activity_for("open", (DEMO_MODEL,))


@pytest.fixture
def worker():
    process = TaskProcess("test-isolation")
    yield process
    process.close()
    assert not process.alive


def assert_one_sentence(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and text.endswith(".") and text.count(". ") == 0, text
    return text


def process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie nobody reaped yet has ended
    except FileNotFoundError:
        return True


def wait_until(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert condition()


# ---------------------------------------------------------------- crash, memory, time


def test_a_segfault_is_a_sentence_naming_the_signal_and_the_next_job_gets_a_new_child(worker):
    first = run_sync(worker.run("process_jobs:child_pid"))
    with pytest.raises(WorkerCrashError) as crash:
        run_sync(worker.run("process_jobs:crash", DEMO_MODEL, False, None, activity=READING))
    text = assert_one_sentence(crash.value)
    assert text.startswith(
        "onnxruntime or onnx crashed (SIGSEGV: segmentation fault) while reading this model"
    )
    assert "probably malformed" in text
    assert isinstance(crash.value, OptimizeError)  # what a worker crash was before it had its own class
    assert process_gone(first)
    second = run_sync(worker.run("process_jobs:child_pid"))
    assert second != first


def test_runaway_allocation_stops_at_the_memory_limit_quickly():
    worker = TaskProcess("test-isolation", memory_limit=2 * GIB)
    try:
        assert run_sync(worker.run("process_jobs:memory_limit")) == 2 * GIB  # applied in the child
        first = run_sync(worker.run("process_jobs:child_pid"))
        started = time.monotonic()
        with pytest.raises(WorkerMemoryError) as exhausted:
            run_sync(worker.run("process_jobs:allocate_forever", DEMO_MODEL, activity=READING))
        assert time.monotonic() - started < 30
        assert (
            str(exhausted.value) == "Reading this model needed more than 2.0 GiB of memory and was stopped."
        )
        assert run_sync(worker.run("process_jobs:child_pid")) != first  # a fresh child after running out
    finally:
        worker.close()


def test_an_allocation_failure_inside_a_library_is_the_memory_error(worker):
    with pytest.raises(WorkerMemoryError, match="needed more than .* GiB of memory"):
        run_sync(worker.run("process_jobs:fail_like_bad_alloc", activity=activity_for("optimize", ())))


def test_a_hang_past_the_time_limit_is_stopped_and_its_child_is_gone(worker):
    pid = run_sync(worker.run("process_jobs:child_pid"))
    started = time.monotonic()
    with pytest.raises(WorkerTimeoutError) as late:
        run_sync(worker.run("process_jobs:hang", DEMO_MODEL, timeout=2, activity=READING))
    assert 2 <= time.monotonic() - started < 10
    assert str(late.value) == "Reading this model took longer than 2 s and was stopped."
    assert process_gone(pid) and not worker.alive
    assert run_sync(worker.run("process_jobs:count", 2)) == 2


def test_reading_has_a_time_limit_by_default_and_zero_means_none():
    assert TaskProcess().time_limits["open"] == TaskProcess().time_limits["load"] == 600
    worker = TaskProcess("test-isolation", time_limits={"open": 1})
    try:
        task = worker.run("process_jobs:count", 3, 0.6, timeout=0)  # 0: no limit, whatever the default
        assert run_sync(task) == 3
    finally:
        worker.close()


def test_a_cancelled_job_hanging_in_a_native_call_does_not_block_the_next_open(worker):
    hung = worker.run("process_jobs:hang")
    next(hung)  # it runs, and will never yield again
    pid = worker._process.pid
    hung.close()  # cancel: the child cannot see it
    started = time.monotonic()
    report = run_sync(worker.run("open", DEMO_MODEL, False, None))
    assert report.layers and time.monotonic() - started < 20
    assert process_gone(pid)


def test_a_superseded_job_ends_as_cancelled_not_as_a_crash(worker):
    older = worker.run("process_jobs:count", 1000, 0.01)
    next(older)
    newer = worker.run("process_jobs:count", 2)
    assert run_sync(newer) == 2
    with pytest.raises(CancelledError):
        next(older)


def test_errors_keep_their_type_and_an_unexpected_one_carries_the_childs_traceback(worker):
    with pytest.raises(DatasetError, match="no labels"):
        run_sync(worker.run("process_jobs:fail", "no labels"))
    with pytest.raises(OptimizeError, match="this and that") as odd:
        run_sync(worker.run("process_jobs:fail_oddly"))
    assert odd.type is OptimizeError  # not mistaken for a crash


def test_a_crash_leaves_no_temporary_file(worker):
    partials = []
    with pytest.raises(WorkerCrashError):
        run_sync(worker.run("process_jobs:temp_file_then_crash"), lambda p: partials.append(p.partial))
    written = Path(partials[-1])
    assert not written.exists() and not written.parent.exists()  # the child's private folder went too
    assert written.parent.name.startswith("test-isolation-")


def test_the_child_does_not_outlive_a_parent_killed_outright(tmp_path):
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from slimscope.core.task_process import TaskProcess
if __name__ == "__main__":
    worker = TaskProcess("orphan")
    task = worker.run("process_jobs:hang")
    next(task)
    print(worker._process.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""
    (tmp_path / "parent.py").write_text(script)
    result = subprocess.run([sys.executable, "parent.py"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip
    assert result.returncode == -signal.SIGKILL, result.stderr
    child = int(result.stdout.split()[0])
    wait_until(lambda: process_gone(child))


# ---------------------------------------------------------------- the sentences and the defaults


def test_each_way_of_ending_has_its_own_sentence():
    optimizing = activity_for("optimize", ())
    assert str(ended_error(optimizing, -signal.SIGABRT, GIB, False)).startswith(
        "onnxruntime or onnx crashed (SIGABRT: aborted) while optimizing this model"
    )
    assert str(ended_error(READING, -signal.SIGKILL, 8 * GIB, True)) == (
        "Reading this model needed more memory than this computer had free and was stopped."
    )
    assert "killed (SIGKILL)" in str(ended_error(READING, -signal.SIGKILL, 8 * GIB, False))
    assert "(exit code 3)" in str(ended_error(READING, 3, None, False))
    converting = activity_for("open", (Path("net.pt2"), True, None))
    assert "while converting this PyTorch file" in str(ended_error(converting, -signal.SIGSEGV, None, False))
    assert "while running tests:job" in str(ended_error(activity_for("tests:job", ()), -11, None, False))


def test_memory_exhaustion_is_recognized_through_the_exception_chain():
    try:
        try:
            raise MemoryError
        except MemoryError as inner:
            raise ValueError("parsing failed") from inner
    except ValueError as outer:
        assert is_out_of_memory(outer)
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 GB"))
    assert is_out_of_memory(RuntimeError("can't start new thread"))  # its stack did not fit under the limit
    assert not is_out_of_memory(RuntimeError("Invalid rank for input"))
    assert not is_out_of_memory(ModelLoadError("Node 'x' computes a constant too large to hold in memory."))


def test_the_default_memory_limit_is_generous_and_within_ram_and_swap():
    limit = default_memory_limit()
    assert limit == DEFAULT_MEMORY_LIMIT
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert limit is not None and min(8 * GIB, ram) <= limit and limit >= ram * 3 // 4 - 1
    assert TaskProcess().memory_limit == limit


# ---------------------------------------------------------------- the command line


def run_cli(argv: list) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(arg) for arg in argv])
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code: int, out: str, err: str) -> str:
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("slimscope: error: "), err
    assert not [p for p in multiprocessing.active_children() if p.name == "slimscope-cli"]  # closed
    return lines[0]


@pytest.fixture
def optimize_argv(tmp_path):
    recipe = tmp_path / "recipe.json"
    save_recipe(template_recipe([]), recipe)
    out = tmp_path / "out"
    out.mkdir()
    return ["optimize", DEMO_MODEL, "--recipe", recipe, "-o", out / "small.onnx"], out


@pytest.mark.parametrize(
    ("job", "options", "expected"),
    [
        ("process_jobs:crash", [], "crashed (SIGSEGV: segmentation fault) while optimizing this model"),
        (
            "process_jobs:hang",
            ["--time-limit", "1"],
            "Optimizing this model took longer than 1 s and was stopped.",
        ),
    ],
)
def test_a_crash_or_hang_while_optimizing_is_one_line_and_writes_nothing(
    monkeypatch, optimize_argv, job, options, expected
):
    argv, out = optimize_argv
    monkeypatch.setitem(cli.WORKER_JOBS, "optimize", job)
    line = assert_one_line_error(*run_cli([*argv, *options]))
    assert expected in line
    assert list(out.iterdir()) == []  # no output, no temporary file beside it


def test_a_crash_while_reading_is_one_line(monkeypatch, optimize_argv):
    argv, out = optimize_argv
    monkeypatch.setitem(cli.WORKER_JOBS, "load", "process_jobs:crash")
    line = assert_one_line_error(*run_cli(argv))
    assert "(SIGSEGV: segmentation fault) while reading this model" in line
    assert list(out.iterdir()) == []


def test_the_time_limit_option(monkeypatch, optimize_argv):
    argv, out = optimize_argv
    monkeypatch.setitem(cli.WORKER_JOBS, "load", "process_jobs:hang")
    line = assert_one_line_error(*run_cli([*argv, "--time-limit", "1.5"]))
    assert line.endswith("Reading this model took longer than 1.5 s and was stopped.")
    assert list(out.iterdir()) == []


def test_the_memory_limit_option(monkeypatch):
    monkeypatch.setitem(cli.WORKER_JOBS, "open", "process_jobs:allocate_forever")
    line = assert_one_line_error(*run_cli(["inspect", DEMO_MODEL, "--memory-limit", "1.5"]))
    assert line.endswith("Reading this model needed more than 1.5 GiB of memory and was stopped.")


def test_evaluate_reads_both_models_in_the_worker(monkeypatch, tmp_path):
    monkeypatch.setitem(cli.WORKER_JOBS, "load", "process_jobs:crash")
    line = assert_one_line_error(*run_cli(["evaluate", DEMO_MODEL, DEMO_MODEL, "--data", tmp_path / "x.npz"]))
    assert "while reading this model" in line


@pytest.mark.parametrize(
    "verb", ["inspect", "recipe", "optimize", "evaluate", "sensitivity", "auto", "finetune"]
)
def test_every_verb_that_reads_models_documents_the_limits(verb, capsys):
    with pytest.raises(SystemExit):
        cli.main([verb, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--memory-limit GIB" in text and "--time-limit SECONDS" in text and "0: no limit" in text


def test_a_negative_limit_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as usage:
        cli.main(["inspect", str(DEMO_MODEL), "--memory-limit", "-1"])
    assert usage.value.code == 2 and "at least 0" in capsys.readouterr().err


def test_ctrl_c_cancels_a_hanging_read_and_ends_the_worker(tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(DEMO_MODEL.read_bytes())
    script = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from slimscope.core import cli
if __name__ == "__main__":
    cli.WORKER_JOBS["open"] = "process_jobs:hang_after_marking"
    sys.exit(cli.main(["inspect", {str(model)!r}]))
"""
    (tmp_path / "command.py").write_text(script)
    command = subprocess.Popen([sys.executable, "command.py"], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               # Ctrl-C as in a terminal, also when this run inherited SIGINT ignored
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not Path(f"{model}.hanging").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        children = Path(f"/proc/{command.pid}/task/{command.pid}/children").read_text().split()
        os.killpg(command.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole group
        _, err = command.communicate(timeout=20)
    finally:
        if command.poll() is None:
            command.kill()
    assert command.returncode == 130 and err.strip().splitlines()[-1] == "slimscope: interrupted", err
    assert "Traceback" not in err
    assert children  # the worker (and multiprocessing's resource tracker, which follows its parent out)
    wait_until(lambda: all(process_gone(int(pid)) for pid in children))
