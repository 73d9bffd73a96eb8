"""The hostile-file corpus (tests/data/hostile/): every file is refused with one line and nothing else.

Each file is opened twice: in-process, where audit hooks see what the loader does (files opened, pickles,
processes, shared libraries, memory), and through the worker process the window uses (`TaskProcess`, job
"open"), which must give the very same message. The corpus is the build script's output (checked here), and
docs/hostile_files.md shows each file's real message (checked here too).
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import pickle
import re
import resource
import shutil
import site
import sys
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest
from refusal_support import expect_refusal

from slimscope.core import errors
from slimscope.core.errors import SlimscopeError
from slimscope.core.loading import load_model
from slimscope.core.task_process import TaskProcess
from slimscope.core.tasks import run_sync

HOSTILE = Path(__file__).resolve().parents[1] / "data" / "hostile"


def _build_script() -> ModuleType:
    """tests/data/hostile/build_corpus.py (not a package: imported from its path, once per session)."""
    if "build_corpus" not in sys.modules:
        spec = importlib.util.spec_from_file_location("build_corpus", HOSTILE / "build_corpus.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["build_corpus"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["build_corpus"]


build_corpus = _build_script()
ENTRIES = json.loads((HOSTILE / build_corpus.MANIFEST).read_text())["files"]
ENTRY_IDS = [entry["file"].removesuffix(".onnx") for entry in ENTRIES]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A copy of the corpus (links kept as links): loading may age its mtimes, and its paths show in messages."""
    folder = tmp_path_factory.mktemp("corpus") / "hostile"
    shutil.copytree(
        HOSTILE, folder, symlinks=True, ignore=shutil.ignore_patterns("*.py", "*.json", "__pycache__")
    )
    return folder


@pytest.fixture(scope="module")
def payload_marker(tmp_path_factory) -> Iterator[Path]:
    """The file the corpus pickle's payload would create; set before the worker starts, so it sees it too."""
    marker = tmp_path_factory.mktemp("payload") / "payload-ran"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(build_corpus.PAYLOAD_ENV, str(marker))
        yield marker
    assert not marker.exists()


@pytest.fixture(scope="module")
def worker(payload_marker) -> Iterator[TaskProcess]:
    process = TaskProcess("test")
    yield process
    process.close()


@pytest.fixture(scope="module")
def warmed_up(tmp_path_factory) -> None:
    """Load a valid model and import onnxruntime once, so that what a hostile file maps later stands out."""
    import onnxruntime  # noqa: F401 - mapping its library now, not during a test

    path = tmp_path_factory.mktemp("valid") / "valid.onnx"
    path.write_bytes(build_corpus.base_model().SerializeToString())
    assert load_model(path).model.graph.node


# ---------------------------------------------------------------------------------------------------
# What a load does besides raising: libraries, memory


_LIBRARY_EVENTS: list[list[str]] = []
_LIBRARY_HOOK: list[bool] = []


def _library_hook(event: str, args: tuple) -> None:
    if _LIBRARY_EVENTS and event == "ctypes.dlopen":
        _LIBRARY_EVENTS[-1].append(str(args[0]))


def _mapped_libraries() -> set[str]:
    with open("/proc/self/maps") as maps:
        return {line.split()[-1] for line in maps if ".so" in line.rsplit("/", 1)[-1]}


@contextmanager
def library_watch(monkeypatch) -> Iterator[dict[str, list[str]]]:
    """Shared libraries the block opens: ctypes.dlopen calls, onnxruntime custom-op library registrations,
    and libraries newly mapped into the process."""
    import onnxruntime

    if not _LIBRARY_HOOK:  # audit hooks cannot be removed: one, active only while a block records
        sys.addaudithook(_library_hook)
        _LIBRARY_HOOK.append(True)
    seen: dict[str, list[str]] = {"dlopen": [], "custom_ops": [], "mapped": []}
    monkeypatch.setattr(
        onnxruntime.SessionOptions,
        "register_custom_ops_library",
        lambda self, path: seen["custom_ops"].append(path),
    )
    before = _mapped_libraries()
    _LIBRARY_EVENTS.append(seen["dlopen"])
    try:
        yield seen
    finally:
        _LIBRARY_EVENTS.pop()
        seen["mapped"] = sorted(_mapped_libraries() - before)


@contextmanager
def allocation_watch() -> Iterator[dict[str, float]]:
    """Peak Python allocation (tracemalloc), growth of the peak resident size, and seconds in the block."""
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    started = time.perf_counter()
    tracemalloc.start()
    numbers: dict[str, float] = {}
    try:
        yield numbers
    finally:
        numbers["peak_bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        numbers["rss_growth_bytes"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) * 1024
        numbers["seconds"] = time.perf_counter() - started


def _python_roots() -> list[str]:
    """Where Python's own files live: importing a module (an encoding, onnxruntime) opens files there."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages()}
    return [os.path.realpath(root) for root in roots]


def _outside(opened: list[str], folder: Path) -> list[str]:
    allowed = [os.path.realpath(folder), *_python_roots()]
    return [path for path in opened if not any(path.startswith(root + os.sep) for root in allowed)]


def _secrets(corpus: Path) -> set[str]:
    return {
        os.path.realpath(corpus / build_corpus.OUTSIDE_FILE),
        os.path.realpath(build_corpus.ABSOLUTE_TARGET),
    }


# ---------------------------------------------------------------------------------------------------
# The corpus itself


def test_the_committed_corpus_is_what_the_build_script_writes(tmp_path):
    build_corpus.write_corpus(tmp_path)

    assert build_corpus.differences(tmp_path, HOSTILE) == []
    listed = [entry["file"] for entry in ENTRIES]
    assert listed == [case.file for case in build_corpus.CASES]
    assert os.readlink(HOSTILE / build_corpus.SYMLINK) == f"../{build_corpus.OUTSIDE_FILE}"


def test_the_base_model_of_the_corpus_loads(tmp_path, worker):
    path = tmp_path / "valid.onnx"
    path.write_bytes(build_corpus.base_model().SerializeToString())

    assert [n.op_type for n in load_model(path).model.graph.node] == ["Conv", "Relu", "Flatten", "Gemm"]
    report = run_sync(worker.run("open", path, False, None))
    assert any(layer.op_type == "Conv" for layer in report.layers)


@pytest.mark.parametrize(
    ("scales", "zero_points"), [([0.1, 0.2], [0, 3]), ([0.1], [0])], ids=["per-channel", "per-tensor"]
)
def test_the_quantized_base_model_loads(scales, zero_points, tmp_path):
    """The quantized cases differ from a model the loader opens only in their damaged parameters."""
    model = build_corpus.base_model()
    build_corpus.quantize_conv_weight(model, scales, zero_points)
    path = tmp_path / "quantized.onnx"
    path.write_bytes(model.SerializeToString())

    loaded = load_model(path)

    assert "DequantizeLinear" in [n.op_type for n in loaded.model.graph.node]


def test_the_corpus_pickle_s_payload_is_live(tmp_path, monkeypatch):
    """Unpickled, the renamed pickle really runs its command: its refusal below is not a harmless one."""
    marker = tmp_path / "ran"
    monkeypatch.setenv(build_corpus.PAYLOAD_ENV, str(marker))

    pickle.loads((HOSTILE / "pickle-renamed.onnx").read_bytes())  # what the loader must never do

    assert marker.exists()


def test_the_symlink_case_s_target_is_a_readable_file_of_the_right_size(corpus):
    link = corpus / build_corpus.SYMLINK
    assert link.is_symlink() and link.resolve() == (corpus / build_corpus.OUTSIDE_FILE).resolve()
    assert link.stat().st_size == 3 * 72 * 4  # fc.weight's bytes: only the link check stops a read


# ---------------------------------------------------------------------------------------------------
# Each file: one line, nothing else


@pytest.mark.parametrize("entry", ENTRIES, ids=ENTRY_IDS)
def test_a_hostile_file_is_refused_with_one_line_and_nothing_else(
    entry, corpus, warmed_up, payload_marker, load_untouched, audit, monkeypatch
):
    path = corpus / entry["file"]

    with library_watch(monkeypatch) as libraries, audit() as log, allocation_watch() as memory:
        expect_refusal(load_untouched, path, getattr(errors, entry["error"]), entry["fragment"])
    assert log.unpickled == [] and log.processes == []
    assert not payload_marker.exists()
    assert _outside(log.opened, path.parent) == []
    assert not _secrets(corpus) & set(log.opened)
    assert libraries["dlopen"] == [] and libraries["custom_ops"] == []
    assert not [lib for lib in libraries["mapped"] if lib.startswith(str(corpus))]
    assert memory["peak_bytes"] < 50 * 2**20, memory
    assert memory["rss_growth_bytes"] < 200 * 2**20, memory
    assert memory["seconds"] < 10, memory


def test_an_unknown_operator_domain_loads_no_library_at_all(corpus, warmed_up, load_untouched, monkeypatch):
    with library_watch(monkeypatch) as libraries:
        expect_refusal(
            load_untouched, corpus / "unknown-domain.onnx", SlimscopeError, "custom-operator library"
        )

    assert libraries == {"dlopen": [], "custom_ops": [], "mapped": []}


def test_the_library_watch_sees_a_library_being_loaded(monkeypatch):
    """The watch above would notice: ctypes opening a library is seen (libm is always there to open)."""
    with library_watch(monkeypatch) as libraries:
        ctypes.CDLL("libm.so.6")

    assert libraries["dlopen"] == ["libm.so.6"]


@pytest.mark.parametrize("entry", ENTRIES, ids=ENTRY_IDS)
def test_the_worker_process_gives_the_same_one_line_message(
    entry, corpus, worker, payload_marker, folder_untouched
):
    path = corpus / entry["file"]
    with pytest.raises(SlimscopeError) as in_process:
        load_model(path)

    with folder_untouched(path.parent), pytest.raises(SlimscopeError) as in_worker:
        run_sync(worker.run("open", path, False, None))

    assert str(in_worker.value) == str(in_process.value)
    assert type(in_worker.value) is type(in_process.value)
    assert worker.alive  # refused, not crashed
    assert not payload_marker.exists()


def _without_runtime_limits(row: str) -> str:
    """The newest opset and IR version the installed onnxruntime runs change with its release, not with us."""
    return re.sub(r"supports up to (opset )?\d+", r"supports up to \1N", row)


def test_the_docs_show_each_file_with_its_real_message(corpus):
    docs = build_corpus.DOCS.read_text().splitlines()

    rows = build_corpus.corpus_rows(corpus)

    assert len(rows) == len(ENTRIES)
    shown = {_without_runtime_limits(line) for line in docs}
    missing = [row for row in rows if _without_runtime_limits(row) not in shown]
    assert missing == [], "docs/hostile_files.md is stale: run tests/data/hostile/build_corpus.py"
