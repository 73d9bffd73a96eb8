"""PyTorch files that run code when opened: refused, and the payload never runs.

Extends tests/core/test_refuse_files.py (plain pickles, payload-free checkpoints) and test_loading_torch.py
(untrusted TorchScript and .pt2 in-process): here the payload is an `os.system` call saved by torch.save in
both its zip and its legacy format, with `.pt` and `.pth` names, and every file is also opened with
`TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` set (which makes torch.load unpickle anything), through the
`slimscope inspect` command in a real process, and through the window's worker process. The files are built
by tests/data/hostile/build_corpus.py, which also writes their messages into docs/hostile_files.md.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
from refusal_support import expect_refusal

from slimscope.core import errors
from slimscope.core.errors import SlimscopeError
from slimscope.core.loading import load_model
from slimscope.core.task_process import TaskProcess
from slimscope.core.tasks import run_sync

HOSTILE = Path(__file__).resolve().parents[1] / "data" / "hostile"
FORCE_UNPICKLING = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


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
PICKLES = ["payload-zip.pt", "payload-legacy.pt", "payload-zip.pth", "payload-legacy.pth"]
GATED = ["payload-program.pt2", "payload-torchscript.pt"]  # opened only with trust


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory) -> dict[str, object]:
    """The files (built once: exporting the .pt2 takes seconds), by name, with their expected refusal."""
    folder = tmp_path_factory.mktemp("code-running") / "models"
    folder.mkdir()
    cases = build_corpus.write_code_running_files(folder)
    assert sorted(c.file for c in cases) == sorted(PICKLES + GATED)
    assert sorted(p.name for p in folder.iterdir()) == sorted(PICKLES + GATED)
    return {"folder": folder, "cases": {c.file: c for c in cases}}


@pytest.fixture(scope="module")
def module_marker(tmp_path_factory) -> Iterator[Path]:
    """The file a payload would create: set for the whole module (the worker and the CLI inherit it)."""
    marker = tmp_path_factory.mktemp("payload") / "payload-ran"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(build_corpus.PAYLOAD_ENV, str(marker))
        patch.setenv(FORCE_UNPICKLING, "1")  # the worker started below runs with it too
        yield marker
    assert not marker.exists()


@pytest.fixture
def marker(module_marker, monkeypatch) -> Path:
    assert os.environ[FORCE_UNPICKLING] == "1"
    return module_marker


@pytest.fixture
def torch_loaders_refused(monkeypatch) -> list[tuple]:
    """torch's own loaders, replaced by ones that fail the test: the files must be refused without them."""
    calls: list[tuple] = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("a PyTorch loader was called on an untrusted file")

    for owner, name in [(torch, "load"), (torch.jit, "load"), (torch.export, "load")]:
        monkeypatch.setattr(owner, name, refuse)
    return calls


def _path(torch_files, name: str) -> Path:
    return torch_files["folder"] / name


def _expected(torch_files, name: str):
    case = torch_files["cases"][name]
    return getattr(errors, case.error), case.fragment


# ---------------------------------------------------------------------------------------------------
# The payloads are real


@pytest.mark.parametrize("name", PICKLES)
def test_torch_load_runs_the_payload_when_told_to_unpickle(name, torch_files, tmp_path, monkeypatch, audit):
    ran = tmp_path / "ran"
    monkeypatch.setenv(build_corpus.PAYLOAD_ENV, str(ran))
    monkeypatch.delenv(FORCE_UNPICKLING, raising=False)
    with pytest.raises(Exception, match="(?i)weights.only"):
        torch.load(_path(torch_files, name))  # torch's default refuses os.system ...
    assert not ran.exists()

    monkeypatch.setenv(FORCE_UNPICKLING, "1")
    with audit() as log, pytest.warns(UserWarning, match=f"{FORCE_UNPICKLING} detected"):
        torch.load(_path(torch_files, name))  # ... the variable turns that off: this is what must never run

    assert ran.exists()
    assert any(event == "os.system" for event, _ in log.events)


# ---------------------------------------------------------------------------------------------------
# Refused in-process, with and without the variable


@pytest.mark.parametrize("force", [False, True], ids=["default", FORCE_UNPICKLING])
@pytest.mark.parametrize("name", PICKLES + GATED)
def test_a_code_running_file_is_refused_and_its_payload_never_runs(
    name, force, torch_files, marker, monkeypatch, load_untouched, audit, torch_loaders_refused
):
    if not force:
        monkeypatch.delenv(FORCE_UNPICKLING)
    error, fragment = _expected(torch_files, name)

    with audit() as log:
        message = expect_refusal(load_untouched, _path(torch_files, name), error, f"'{name}'", fragment)

    assert not marker.exists()
    assert log.unpickled == [] and log.processes == []  # nothing unpickled, no conversion child started
    assert torch_loaders_refused == []
    if error is errors.UntrustedModelError:
        assert "--trust" in message


# ---------------------------------------------------------------------------------------------------
# The command line and the worker process, with the variable set


def _slimscope_command() -> list[str]:
    """The installed `slimscope` script beside this Python, else the same entry point through -m."""
    script = Path(sys.executable).with_name("slimscope")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "slimscope"]


@pytest.mark.parametrize("name", PICKLES + GATED)
def test_slimscope_inspect_refuses_it_in_one_line_with_the_variable_set(
    name, torch_files, marker, folder_untouched
):
    path = _path(torch_files, name)
    with pytest.raises(SlimscopeError) as in_process:
        load_model(path)

    with folder_untouched(path.parent):
        result = subprocess.run(
            [*_slimscope_command(), "inspect", str(path)],
            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONWARNINGS="error"),  # FORCE_UNPICKLING and the marker are set
        )  # fmt: skip

    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == [f"slimscope: error: {in_process.value}"]
    assert not marker.exists()


@pytest.fixture(scope="module")
def worker(module_marker) -> Iterator[TaskProcess]:
    process = TaskProcess("test")
    yield process
    process.close()


@pytest.mark.parametrize("name", PICKLES + GATED)
def test_the_worker_process_refuses_it_with_the_same_message(
    name, torch_files, worker, marker, folder_untouched
):
    path = _path(torch_files, name)
    with pytest.raises(SlimscopeError) as in_process:
        load_model(path)

    with folder_untouched(path.parent), pytest.raises(SlimscopeError) as in_worker:
        run_sync(worker.run("open", path, False, None))

    assert type(in_worker.value) is type(in_process.value)
    assert str(in_worker.value) == str(in_process.value)
    assert worker.alive
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------------
# The documentation


def test_the_docs_show_each_file_with_its_real_message(torch_files, marker):
    docs = build_corpus.DOCS.read_text().splitlines()

    for case in torch_files["cases"].values():
        message = build_corpus.refusal_message(_path(torch_files, case.file))
        row = build_corpus.table_row(case.case, case.file, message)
        assert row in docs, (
            f"docs/hostile_files.md is stale ({case.file}): run tests/data/hostile/build_corpus.py"
        )
    assert not marker.exists()
