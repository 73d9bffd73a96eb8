"""Files the user owns: Slimscope never writes over its input (however the path is spelled), never writes
beside the source, works from a read-only folder, fails cleanly on a read-only or full output folder,
and takes any file name (models over 2 GiB: test_export_external_data.py).

Tests run as root here, where permission bits do not stop writes: a read-only folder is checked by
watching that nothing tries to write there (the `audit` and `folder_untouched` fixtures), by simulated
EACCES/ENOSPC, and — where a private mount namespace can be made — by a real read-only bind mount and a
really full tmpfs.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from slimscope.core import export
from slimscope.core.cli import main
from slimscope.core.errors import ExportError
from slimscope.core.export import export_model, refuse_protected
from slimscope.core.loading import load_model
from slimscope.core.netron_view import NetronView
from slimscope.core.recipe import default_recipe
from slimscope.core.recipe_files import dumps_recipe
from slimscope.resources import DEMO_CALIBRATION, DEMO_DATA, DEMO_MODEL, DEMO_TRAINING

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
UNUSUAL_NAME = "数字 net #1 100%.onnx"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(*argv) -> tuple[int, str]:
    """`slimscope ARGV` in this process: (exit code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in argv])
    return code, err.getvalue()


def one_line_error(code: int, stderr: str) -> str:
    lines = stderr.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("slimscope: error: "), stderr
    assert "Traceback" not in stderr and "unexpected" not in stderr
    return lines[0].removeprefix("slimscope: error: ")


def top1(model: Path | onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0].argmax(axis=1)


@pytest.fixture(scope="module")
def recipes(tmp_path_factory) -> dict[str, Path]:
    """int8 only (calibrated by onnxruntime's quantizer), pruning only (no calibration), and a one-epoch
    retraining recipe for `finetune`."""
    folder = tmp_path_factory.mktemp("recipes")
    paths = {"int8": folder / "int8.json", "prune": folder / "prune.json", "train": folder / "train.json"}
    paths["int8"].write_text(dumps_recipe(default_recipe().with_defaults(prune=None)))
    paths["prune"].write_text(dumps_recipe(default_recipe().with_defaults(quantize=None)))
    training = {"steps": 1, "final_epochs": 1, "max_batches_per_epoch": 2, "batch_size": 32}
    paths["train"].write_text(
        json.dumps({"version": 1, "defaults": {"quantize": None}, "training": training})
    )
    return paths


@pytest.fixture
def source(tmp_path) -> Path:
    """A copy of the demo model alone in its folder."""
    folder = tmp_path / "model"
    folder.mkdir()
    return Path(shutil.copy(DEMO_MODEL, folder / "digits_net.onnx"))


def optimize_argv(source: Path, output: Path | str, recipe: Path) -> list:
    return ["optimize", source, "--recipe", recipe, "-o", output, "--calib", DEMO_CALIBRATION, "--no-latency"]


# ---------------------------------------------------------------------------------------------------
# The output is never the input, however it is spelled.

SPELLINGS = ["dot-slash", "dot-dot", "symlink", "hard-link"]


def spell_the_source(spelling: str, source: Path) -> str:
    """Another name for `source`, relative to its folder (links are made there)."""
    if spelling == "dot-slash":
        return f"./{source.name}"
    if spelling == "dot-dot":
        (source.parent / "sub").mkdir()
        return f"sub/../{source.name}"
    link = source.with_name(f"{spelling}.onnx")
    if spelling == "symlink":
        link.symlink_to(source)
    else:
        os.link(source, link)
    return link.name


@pytest.mark.parametrize("verb", ["optimize", "finetune"])
@pytest.mark.parametrize("spelling", SPELLINGS)
def test_the_source_spelled_differently_is_refused(
    verb, spelling, source, recipes, monkeypatch, folder_untouched
):
    output = spell_the_source(spelling, source)
    monkeypatch.chdir(source.parent)
    digest = sha256(source)
    if verb == "optimize":
        argv = optimize_argv(source, output, recipes["int8"])
    else:
        argv = ["finetune", source, "--recipe", recipes["train"], "--train", DEMO_TRAINING, "-o", output]
    with folder_untouched(source.parent):
        message = one_line_error(*run_cli(*argv))
    spelled = source.parent / output  # made absolute as spelled: the command works in a private folder
    assert message.startswith(f"'{spelled}' would overwrite '{source}', which this command reads"), message
    assert sha256(source) == digest


def test_a_name_differing_only_in_case_is_the_source_only_where_the_file_system_says_so(source):
    other_case = source.with_name(source.name.upper())
    if other_case.exists():  # case-insensitive file system: the same file
        with pytest.raises(ExportError, match="would overwrite"):
            refuse_protected(other_case, [source])
    else:  # case-sensitive: another file, which may be written
        refuse_protected(other_case, [source])
        export_model(onnx.load(source), other_case, protected=[source])
        assert sha256(source) == sha256(DEMO_MODEL)


def test_an_output_whose_weights_file_would_be_the_sources_data_is_refused(tmp_path, conv_net):
    source = tmp_path / "net.onnx"
    onnx.save_model(conv_net.model, source, save_as_external_data=True, location="weights.onnx.data")
    loaded = load_model(source)
    protected = [loaded.source, *loaded.external_files]
    with pytest.raises(ExportError) as info:
        export_model(loaded.model, tmp_path / "weights.onnx", protected=protected)
    assert str(info.value) == (
        f"'{tmp_path / 'weights.onnx'}' would overwrite '{tmp_path / 'weights.onnx.data'}' with its weights "
        "file 'weights.onnx.data', and this command reads that file (the model being optimized or its data); "
        "choose another file name."
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx", "weights.onnx.data"]


# ---------------------------------------------------------------------------------------------------
# Nothing is written beside the source.


def test_a_file_named_like_onnxruntimes_inferred_model_survives_quantization(
    source, recipes, tmp_path, folder_untouched
):
    inferred = source.with_name(f"{source.stem}-inferred.onnx")
    inferred.write_bytes(b"the user's own file")
    output = tmp_path / "out.onnx"
    with folder_untouched(source.parent):
        assert run_cli(*optimize_argv(source, output, recipes["int8"]))[0] == 0
    assert inferred.read_bytes() == b"the user's own file"
    assert any(node.op_type == "QuantizeLinear" for node in onnx.load(output).graph.node)


def _writes_under(log, folder: Path) -> list[str]:
    """Paths under `folder` that the audited block opened for writing."""
    root = os.path.realpath(folder) + os.sep
    written = []
    for event, args in log.events:
        if (
            event == "open"
            and isinstance(args[0], str | bytes | os.PathLike)
            and (args[2] or 0) & WRITE_FLAGS
        ):
            path = os.path.realpath(os.fsdecode(args[0]))
            if path.startswith(root):
                written.append(path)
    return written


def test_a_read_only_source_folder_is_only_ever_read(tmp_path, recipes, audit, folder_untouched):
    folder = tmp_path / "read-only"
    folder.mkdir()
    source = folder / "digits_net.onnx"
    onnx.save_model(
        onnx.load(DEMO_MODEL), source, save_as_external_data=True, location="digits_net.onnx.data"
    )
    (folder / "notes.txt").write_text("the user's notes")
    out = tmp_path / "out"
    out.mkdir()
    folder.chmod(0o555)  # stops writes for other users than root; for root, the audit below is the check
    view = NetronView()
    try:
        with folder_untouched(folder), audit() as log:
            loaded = load_model(source)
            argv = optimize_argv(source, out / "int8.onnx", recipes["int8"])
            assert run_cli(*argv, "--report", out / "r.json") == (0, "")
            export_model(loaded.model, out / "copy.onnx", protected=[source, *loaded.external_files])
            for shown in (source, loaded.model):
                with urllib.request.urlopen(view.show(shown, source.name) + "/", timeout=10) as page:
                    assert page.status == 200
            view.stop()
    finally:
        view.stop()
        folder.chmod(0o755)
    assert _writes_under(log, folder) == []
    assert {os.path.realpath(source), os.path.realpath(folder / "digits_net.onnx.data")} <= set(log.opened)
    assert sorted(p.name for p in out.iterdir()) == ["copy.onnx", "int8.onnx", "r.json"]
    with np.load(DEMO_DATA) as data:
        x = data["x"][:50]
    np.testing.assert_array_equal(top1(out / "copy.onnx", x), top1(DEMO_MODEL, x))


# ---------------------------------------------------------------------------------------------------
# A read-only or full output folder: one clear line, the previous output intact, no temporary file.


def _refuse_creations_in(monkeypatch, folder: Path, error_number: int) -> None:
    """Make creating a file or folder inside `folder` fail as the OS would (root ignores permissions)."""
    real_open, real_mkdir = os.open, os.mkdir
    inside = os.path.realpath(folder) + os.sep

    def guarded(path, real, *args, **kwargs):
        if os.path.realpath(os.fsdecode(path)).startswith(inside):
            raise OSError(error_number, os.strerror(error_number), os.fsdecode(path))
        return real(path, *args, **kwargs)

    def open_(path, flags, *args, **kwargs):
        if flags & WRITE_FLAGS:
            return guarded(path, real_open, flags, *args, **kwargs)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "mkdir", lambda path, *args, **kwargs: guarded(path, real_mkdir, *args, **kwargs))


def _disk_full_at_flush(monkeypatch) -> None:
    """Data written, then the flush to disk fails: where a full disk shows on delayed-allocation file systems."""

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)


FAILURES = {
    "read-only": (
        lambda mp, folder: _refuse_creations_in(mp, folder, errno.EACCES),
        "the folder is read-only.",
    ),
    "read-only-file-system": (
        lambda mp, folder: _refuse_creations_in(mp, folder, errno.EROFS),
        "the folder is read-only.",
    ),
    "disk-full": (lambda mp, folder: _disk_full_at_flush(mp), "the disk is full."),
}


@pytest.mark.parametrize("failure", FAILURES)
def test_a_failed_optimize_output_is_one_line_and_keeps_the_previous_output(
    failure, source, recipes, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    out.mkdir()
    output = out / "digits_net.int8.onnx"
    output.write_bytes(b"previous export")
    make_it_fail, reason = FAILURES[failure]
    make_it_fail(monkeypatch, out)
    message = one_line_error(*run_cli(*optimize_argv(source, output, recipes["prune"])))
    assert message == f"Cannot write '{output}': {reason}"
    assert sorted(p.name for p in out.iterdir()) == [output.name]  # no temporary file
    assert output.read_bytes() == b"previous export"


@pytest.mark.parametrize("failure", FAILURES)
def test_a_failed_write_with_external_data_keeps_the_previous_pair(failure, conv_net, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "SINGLE_FILE_LIMIT", 1000)  # the 2 GiB path on a 4 KiB model
    output = tmp_path / "net.onnx"
    export_model(conv_net.model, output)
    before = {p.name: sha256(p) for p in tmp_path.iterdir()}
    assert sorted(before) == ["net.onnx", "net.onnx.data"]
    make_it_fail, reason = FAILURES[failure]
    make_it_fail(monkeypatch, tmp_path)
    with pytest.raises(ExportError) as info:
        export_model(onnx.load(DEMO_MODEL), output)
    assert str(info.value) == f"Cannot write '{output}': {reason}"
    assert {p.name: sha256(p) for p in tmp_path.iterdir()} == before


_NAMESPACE_DRIVER = r"""
import contextlib, hashlib, io, json, os, subprocess, sys
from pathlib import Path

spec = json.loads(sys.argv[1])
src, full = Path(spec["src"]), Path(spec["full"])
subprocess.run(["mount", "--bind", src, src], check=True)
subprocess.run(["mount", "-o", "remount,bind,ro", src], check=True)
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", full], check=True)

import onnx
from slimscope.core import export
from slimscope.core.cli import main
from slimscope.resources import DEMO_MODEL

def cli(*argv):
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        return [main([str(a) for a in argv]), err.getvalue()]

def listing(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}

export.SINGLE_FILE_LIMIT = 1000  # pair.onnx and its data: the >2 GiB path on small models
export.export_model(onnx.load(spec["small"]), full / "pair.onnx")
(full / "single.onnx").write_bytes(b"previous export")
with open(full / "filler", "wb", buffering=0) as filler:  # fill the disk, then free 12 KiB: writes fail part-way
    try:
        while True:
            filler.write(b"\0" * 4096)
    except OSError:
        pass
os.truncate(full / "filler", os.path.getsize(full / "filler") - 12288)
export.SINGLE_FILE_LIMIT = 2**31 - 1
results = {"before": {"src": listing(src), "full": listing(full)}}
int8 = ["--recipe", spec["int8"], "--calib", spec["calib"], "--no-latency"]
prune = ["--recipe", spec["prune"], "--no-latency"]
results["ok"] = cli("optimize", src / "digits_net.onnx", "-o", spec["elsewhere"], *int8)
results["into-read-only"] = cli("optimize", src / "digits_net.onnx", "-o", src / "new.onnx", *prune)
results["into-full"] = cli("optimize", src / "digits_net.onnx", "-o", full / "single.onnx", *prune)
export.SINGLE_FILE_LIMIT = 1000
try:
    export.export_model(onnx.load(DEMO_MODEL), full / "pair.onnx")
    results["pair-into-full"] = "written"
except export.ExportError as exc:
    results["pair-into-full"] = str(exc)
results["after"] = {"src": listing(src), "full": listing(full)}
print(json.dumps(results))
"""


def _private_mounts_command() -> list[str] | None:
    """`unshare` arguments that give a child its own mounts (gone when it exits), or None if not allowed."""
    if (
        not sys.platform.startswith("linux")
        or shutil.which("unshare") is None
        or shutil.which("mount") is None
    ):
        return None
    command = ["unshare", "--mount"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    probe = subprocess.run(
        [*command, "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", "/mnt"], capture_output=True
    )
    return command if probe.returncode == 0 else None


@pytest.mark.slow  # over 5 s: CI's second stage
def test_a_really_read_only_and_a_really_full_folder(source, recipes, tmp_path, conv_net):
    """A read-only bind mount and a 2 MiB tmpfs, in a private mount namespace of a child process."""
    command = _private_mounts_command()
    if command is None:
        pytest.skip("no private mount namespace here (unshare --mount is not permitted)")
    full, small = tmp_path / "full", tmp_path / "small.onnx"
    full.mkdir()
    onnx.save_model(conv_net.model, small)
    (source.parent / "notes.txt").write_text("the user's notes")
    spec = {"src": str(source.parent), "full": str(full), "small": str(small), "int8": str(recipes["int8"]),
            "prune": str(recipes["prune"]), "calib": str(DEMO_CALIBRATION), "elsewhere": str(tmp_path / "elsewhere.onnx")}  # fmt: skip
    completed = subprocess.run([*command, sys.executable, "-c", _NAMESPACE_DRIVER, json.dumps(spec)],
                               capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    results = json.loads(completed.stdout)
    assert results["ok"] == [0, ""]
    assert (tmp_path / "elsewhere.onnx").is_file()  # written outside the namespace's mounts
    assert (
        one_line_error(*results["into-read-only"])
        == f"Cannot write '{source.parent / 'new.onnx'}': the folder is read-only."
    )
    assert (
        one_line_error(*results["into-full"]) == f"Cannot write '{full / 'single.onnx'}': the disk is full."
    )
    assert results["pair-into-full"] == f"Cannot write '{full / 'pair.onnx'}': the disk is full."
    assert results["after"] == results["before"]  # previous outputs intact, no temporary file anywhere
    assert sorted(results["after"]["full"]) == ["filler", "pair.onnx", "pair.onnx.data", "single.onnx"]
    assert list(full.iterdir()) == []  # the tmpfs went away with the child


# ---------------------------------------------------------------------------------------------------
# Spaces, unicode, '#' and '%' in every path.


def test_unusual_paths_work_everywhere(tmp_path, recipes, monkeypatch):
    folder = tmp_path / "modèles"
    folder.mkdir()
    source = folder / UNUSUAL_NAME
    onnx.save_model(
        onnx.load(DEMO_MODEL), source, save_as_external_data=True, location=UNUSUAL_NAME + ".data"
    )
    loaded = load_model(source)
    assert loaded.external_files == [folder / (UNUSUAL_NAME + ".data")]
    assert run_cli("inspect", source) == (0, "")

    out = folder / "sortie #2 50%"
    out.mkdir()
    output = out / "数字 net #1 100%.slim.onnx"
    report = out / "数字 net #1 100%.slim.report.json"
    assert run_cli(*optimize_argv(source, output, recipes["prune"]), "--report", report) == (0, "")
    assert json.loads(report.read_text())["output"] == str(output)
    with np.load(DEMO_DATA) as data:
        x = data["x"][:50]
    assert (top1(output, x) == top1(DEMO_MODEL, x)).mean() >= 0.9

    monkeypatch.setattr(export, "SINGLE_FILE_LIMIT", 1000)  # the pair of files, with the unusual name
    pair = export_model(loaded.model, out / UNUSUAL_NAME, protected=[source, *loaded.external_files])
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [output.name, report.name, UNUSUAL_NAME, UNUSUAL_NAME + ".data"]
    )
    np.testing.assert_array_equal(top1(load_model(pair).model, x), top1(DEMO_MODEL, x))

    view = NetronView()
    try:
        url = view.show(source, source.name)
        assert view.model_url == f"{url}/data/{urllib.parse.quote('数字 net _1 100_.onnx')}"
        with urllib.request.urlopen(view.model_url, timeout=10) as served:
            assert served.read() == source.read_bytes()
    finally:
        view.stop()
