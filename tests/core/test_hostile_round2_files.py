"""The second hostile round, data loss (issue 13, items 1-4 and 8): nothing outside what a command was told
to write is ever written, whatever the working folder holds, however an input is spelled as an output,
whatever kind of file an output names, and whenever Ctrl-C comes.

Every case checks that the source and every input stay byte-identical and that no temporary is left.
Tests run as root here: device nodes are made with mknod in a private folder (never /dev itself).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from slimscope.core.cli import main
from slimscope.core.errors import ExportError
from slimscope.core.export import export_model, write_json
from slimscope.core.recipe import default_recipe
from slimscope.core.recipe_files import dumps_recipe, save_recipe
from slimscope.core.task_process import TaskProcess
from slimscope.core.tasks import Progress, run_sync
from slimscope.resources import DEMO_CALIBRATION, DEMO_DATA, DEMO_MODEL, DEMO_TRAINING

ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def digests(folder: Path) -> dict[str, str]:
    """Every regular file below `folder` (links not followed) by relative name → its hash."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            found[str(path.relative_to(folder))] = digest(path)
    return found


def entries(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def run_cli(*argv) -> tuple[int, str]:
    """`slimscope ARGV` in this process: (exit code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in argv])
    return code, err.getvalue()


def one_line_error(code: int, stderr: str) -> str:
    lines = stderr.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("slimscope: error: "), (code, stderr)
    assert "Traceback" not in stderr and "unexpected" not in stderr
    return lines[0].removeprefix("slimscope: error: ")


def slimscope(*argv, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "slimscope", *map(str, argv)],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture
def work(tmp_path) -> Path:
    """A folder with copies of the demo model, an int8 recipe, calibration, evaluation and training data."""
    folder = tmp_path / "work"
    folder.mkdir()
    shutil.copy(DEMO_MODEL, folder / "net.onnx")
    shutil.copy(DEMO_CALIBRATION, folder / "calib.npz")
    shutil.copy(DEMO_DATA, folder / "eval.npz")
    shutil.copy(DEMO_TRAINING, folder / "train.npz")
    (folder / "r.json").write_text(dumps_recipe(default_recipe().with_defaults(prune=None)))
    return folder


# ---------------------------------------------------------------------------------------------------
# 1. Libraries that save into the working folder do it in a private one.


def gemm_with_rank3_weight() -> onnx.ModelProto:
    """A Gemm whose weight has rank 3: onnxruntime's symbolic shape inference cannot finish on it and then
    saves `sym_shape_infer_temp.onnx` and the weights as `<uuid>.data` into the working folder."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((64, 16, 2)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], name="fc")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [weight],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_the_model_really_makes_onnxruntime_save_into_the_working_folder(tmp_path, monkeypatch):
    """The premise of the tests below: without a private folder, the files would land in the user's."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    monkeypatch.chdir(tmp_path)
    with pytest.raises(Exception, match="Incomplete symbolic shape inference"):
        SymbolicShapeInference.infer_shapes(gemm_with_rank3_weight())
    assert (tmp_path / "sym_shape_infer_temp.onnx").exists()


@pytest.fixture
def trap(tmp_path) -> tuple[Path, Path, Path]:
    """The issue's repro: the model alone in its folder with `sym_shape_infer_temp.onnx` linked to a
    victim outside it; calibration data and recipe elsewhere. (model folder, victim, other folder)"""
    folder, elsewhere = tmp_path / "m", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    onnx.save(gemm_with_rank3_weight(), folder / "model.onnx")
    victim = elsewhere / "victim.txt"
    victim.write_text("the user's own file\n")
    (folder / "sym_shape_infer_temp.onnx").symlink_to(victim)
    x = np.random.default_rng(1).standard_normal((8, 64)).astype(np.float32)
    np.savez(elsewhere / "d.npz", x=x)
    (elsewhere / "r.json").write_text(dumps_recipe(default_recipe().with_defaults(prune=None)))
    return folder, victim, elsewhere


@pytest.mark.parametrize(
    "verb",
    [
        # the recipe is applied in the worker process
        ["optimize", "model.onnx", "--recipe", "{e}/r.json", "-o", "{e}/o.onnx", "--calib", "{e}/d.npz"],
        # the probes quantize in the command's own process
        ["sensitivity", "model.onnx", "--data", "{e}/d.npz", "--settings", "int8", "--samples", "8"],
    ],
    ids=["optimize", "sensitivity"],
)
def test_onnxruntimes_leftovers_never_reach_the_users_folder(verb, trap, folder_untouched):
    folder, victim, elsewhere = trap
    before, others = victim.read_bytes(), digests(elsewhere)
    with folder_untouched(folder):
        done = slimscope(*(arg.format(e=elsewhere) for arg in verb), cwd=folder)  # from the model's folder
    assert "Traceback" not in done.stderr, done.stderr
    assert victim.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "sym_shape_infer_temp.onnx"]
    assert (folder / "sym_shape_infer_temp.onnx").is_symlink()
    assert {k: v for k, v in digests(elsewhere).items() if k != "o.onnx"} == others


def where_am_i(state, path, litter: bool):
    """A job that reports the child's working folder, what it holds, and the path it was given; `litter`
    leaves a file there, as onnxruntime does."""
    here = os.getcwd()
    found = sorted(os.listdir(here))
    if litter:
        Path("sym_shape_infer_temp.onnx").write_bytes(b"left behind")
    yield Progress(None, "looking")
    return here, found, str(path)


def test_the_worker_works_in_a_private_folder_emptied_after_each_job(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    worker = TaskProcess("test-cwd", memory_limit=None)
    try:
        first = run_sync(worker.run("test_hostile_round2_files:where_am_i", Path("model.onnx"), True))
        second = run_sync(worker.run("test_hostile_round2_files:where_am_i", Path("model.onnx"), False))
    finally:
        worker.close()
    here, found, path = first
    assert Path(here) != tmp_path and not Path(here).is_relative_to(tmp_path) and found == []
    assert path == str(tmp_path / "model.onnx")  # a relative path crosses made absolute
    assert second[0] == here and second[1] == []  # what the first job left was removed
    assert not Path(here).exists()  # and the folder goes with the process
    assert os.listdir(tmp_path) == []


def test_the_command_and_the_window_work_in_a_private_folder(tmp_path, monkeypatch):
    """`slimscope gui model.onnx`: the window's process leaves the user's folder after reading its
    arguments, which are made absolute first."""
    from slimscope.core import cli

    seen = {}

    def window(model, *, trust):
        seen.update(cwd=os.getcwd(), model=model, listing=os.listdir("."))
        Path("sym_shape_infer_temp.onnx").write_bytes(b"a library saving where it stands")
        return 0

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "_open_window", window)
    assert run_cli("gui", "sub/../model.onnx") == (0, "")
    assert seen["model"] == tmp_path / "sub/../model.onnx" and seen["listing"] == []
    assert not Path(seen["cwd"]).is_relative_to(tmp_path) and not Path(seen["cwd"]).exists()
    assert os.getcwd() == str(tmp_path) and os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------------
# 2 and 3. What a command reads is never what it writes, however spelled.


def spell(spelling: str, target: Path) -> str:
    """Another name for `target`, relative to its folder (the command runs there)."""
    if spelling == "same":
        return target.name
    if spelling == "dot-slash":
        return f"./{target.name}"
    if spelling == "dot-dot":
        (target.parent / "sub").mkdir(exist_ok=True)
        return f"sub/../{target.name}"
    link = target.with_name(f"{spelling}-{target.name}")
    if spelling == "symlink":
        link.symlink_to(target.name)
    else:
        os.link(target, link)
    return link.name


SPELLINGS = ["same", "dot-slash", "dot-dot", "symlink", "hard-link"]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_recipe_never_writes_over_its_model(spelling, work, monkeypatch):
    monkeypatch.chdir(work)
    output = spell(spelling, work / "net.onnx")
    before = digests(work)
    message = one_line_error(*run_cli("recipe", "net.onnx", "-o", output))
    assert message == (
        f"'{work / output}' would overwrite '{work / 'net.onnx'}', which this command reads (the model); "
        "choose another file name."
    )
    assert digests(work) == before


# (verb arguments, the file the output would overwrite, what the message calls it); run in `work`.
OVERLAPS = {
    "optimize-output-is-recipe": (
        ["optimize", "net.onnx", "--recipe", "r.json", "-o", "{o}", "--calib", "calib.npz"], "r.json", "the recipe"),
    "optimize-output-is-eval": (
        ["optimize", "net.onnx", "--recipe", "r.json", "-o", "{o}", "--eval", "eval.npz"], "eval.npz",
        "the evaluation data"),
    "optimize-report-is-calib": (
        ["optimize", "net.onnx", "--recipe", "r.json", "-o", "out.onnx", "--calib", "calib.npz", "--report", "{o}"],
        "calib.npz", "the calibration data"),
    "optimize-output-is-model": (
        ["optimize", "net.onnx", "--recipe", "r.json", "-o", "{o}"], "net.onnx", "the model being optimized"),
    "auto-output-is-data": (["auto", "net.onnx", "--data", "eval.npz", "-o", "{o}"], "eval.npz",
                            "the evaluation data"),
    "auto-output-is-calib": (["auto", "net.onnx", "--data", "eval.npz", "--calib", "calib.npz", "-o", "{o}"],
                             "calib.npz", "the calibration data"),
    "auto-output-is-model": (["auto", "net.onnx", "--data", "eval.npz", "-o", "{o}"], "net.onnx", "the model"),
    "finetune-output-is-train": (
        ["finetune", "net.onnx", "--recipe", "r.json", "--train", "train.npz", "-o", "{o}"], "train.npz",
        "the training data"),
    "finetune-output-is-val": (
        ["finetune", "net.onnx", "--recipe", "r.json", "--train", "train.npz", "--val", "eval.npz", "-o", "{o}"],
        "eval.npz", "the validation data"),
    "finetune-output-is-calib": (
        ["finetune", "net.onnx", "--recipe", "r.json", "--train", "train.npz", "--calib", "calib.npz", "-o", "{o}"],
        "calib.npz", "the calibration data"),
    "finetune-output-is-recipe": (
        ["finetune", "net.onnx", "--recipe", "r.json", "--train", "train.npz", "-o", "{o}"], "r.json",
        "the recipe"),
}  # fmt: skip


def overlap_cases():
    """Every spelling for the recipe; one spelling each, in turn, for the others (each run costs a worker)."""
    for number, (name, case) in enumerate(OVERLAPS.items()):
        spellings = SPELLINGS if name == "optimize-output-is-recipe" else [SPELLINGS[number % len(SPELLINGS)]]
        for spelling in spellings:
            yield pytest.param(*case, spelling, id=f"{name}-{spelling}")


@pytest.mark.parametrize(("argv", "victim", "what", "spelling"), list(overlap_cases()))
def test_no_output_overwrites_an_input(argv, victim, what, spelling, work, monkeypatch, folder_untouched):
    monkeypatch.chdir(work)
    spelled = spell(spelling, work / victim)
    before = digests(work)
    with folder_untouched(work):
        message = one_line_error(*run_cli(*(arg.format(o=spelled) for arg in argv)))
    assert message == (
        f"'{work / spelled}' would overwrite '{work / victim}', which this command reads ({what}); "
        "choose another file name."
    )
    assert digests(work) == before


def test_the_report_never_overwrites_the_model_it_reports_on(work, monkeypatch, folder_untouched):
    monkeypatch.chdir(work)
    with folder_untouched(work):
        message = one_line_error(*run_cli("optimize", "net.onnx", "--recipe", "r.json", "-o", "out.onnx",
                                          "--report", "sub/../out.onnx"))  # fmt: skip
    assert message == (
        f"'{work / 'sub/../out.onnx'}' would overwrite '{work / 'out.onnx'}', which this command writes too "
        "(the optimized model); choose another file name."
    )


def test_the_models_external_data_file_is_never_an_output(tmp_path, monkeypatch, folder_untouched):
    model = onnx.load(DEMO_MODEL)
    onnx.save_model(model, tmp_path / "ext.onnx", save_as_external_data=True, location="weights.bin")
    monkeypatch.chdir(tmp_path)
    before = digests(tmp_path)
    with folder_untouched(tmp_path):
        for argv, what in ((["recipe", "ext.onnx", "-o", "./weights.bin"], "a data file of the model"),
                           (["auto", "ext.onnx", "--data", DEMO_DATA, "-o", "weights.bin"], "a data file of the model")):  # fmt: skip
            message = one_line_error(*run_cli(*argv))
            assert message == (
                f"'{tmp_path / 'weights.bin'}' would overwrite '{tmp_path / 'weights.bin'}', which this command "
                f"reads ({what}); choose another file name."
            )
    assert digests(tmp_path) == before


def test_an_output_inside_an_image_folder_it_reads_is_refused(work, monkeypatch, folder_untouched):
    images = work / "images"
    for label in ("0", "1"):
        (images / label).mkdir(parents=True)
        (images / label / "a.png").write_bytes(b"\x89PNG not decoded: the check comes first")
    monkeypatch.chdir(work)
    before = digests(work)
    with folder_untouched(images):
        message = one_line_error(*run_cli("optimize", "net.onnx", "--recipe", "r.json", "-o", "out.onnx",
                                          "--eval", "images", "--report", "images/0/report.json"))  # fmt: skip
    assert message == (
        f"'{work / 'images/0/report.json'}' would write into the folder '{work / 'images'}', which this "
        "command reads (the evaluation data); choose a file outside it."
    )
    assert digests(work) == before


def test_finetune_never_writes_its_model_over_a_checkpoint(work, monkeypatch, folder_untouched):
    checkpoints = work / "checkpoints"
    checkpoints.mkdir()
    monkeypatch.chdir(work)
    with folder_untouched(work):
        message = one_line_error(*run_cli("finetune", "net.onnx", "--recipe", "r.json", "--train", "train.npz",
                                          "--checkpoints", "checkpoints", "-o",
                                          "checkpoints/slimscope-finetune-0123456789abcdef.pt"))  # fmt: skip
    assert message == (
        f"'{work / 'checkpoints/slimscope-finetune-0123456789abcdef.pt'}' would overwrite a checkpoint of this "
        f"run in '{work / 'checkpoints'}'; choose another file name."
    )


def test_verbs_that_write_nothing_leave_every_file_as_it_was(work, monkeypatch, folder_untouched):
    """inspect, evaluate and sensitivity print only: nothing to protect, nothing written anywhere."""
    monkeypatch.chdir(work)
    with folder_untouched(work):
        assert run_cli("inspect", "net.onnx")[0] == 0
        assert run_cli("evaluate", "net.onnx", "net.onnx", "--data", "eval.npz", "--no-latency")[0] == 0


# ---------------------------------------------------------------------------------------------------
# 4. Only regular files are written.


def special_files(folder: Path) -> dict[str, Path]:
    """Outputs that are not regular files, made in `folder`: a device node (as root), a FIFO, a folder,
    links to a process's standard output, to the device, and one to nothing."""
    made = {}
    if ROOT:
        made["device"] = folder / "null-device"
        os.mknod(made["device"], 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is
        made["link-to-device"] = folder / "link-to-device"
        made["link-to-device"].symlink_to(made["device"])
    made["fifo"] = folder / "fifo"
    os.mkfifo(made["fifo"])
    made["folder"] = folder / "a-folder"
    made["folder"].mkdir()
    made["link-to-stdout"] = folder / "stdout"
    made["link-to-stdout"].symlink_to("/proc/self/fd/1")
    made["link-to-dev-stdout"] = folder / "dev-stdout"
    made["link-to-dev-stdout"].symlink_to("/dev/stdout")
    made["dangling-link"] = folder / "dangling"
    made["dangling-link"].symlink_to(folder / "nowhere")
    return made


KIND_WORDS = {
    "device": "it is a device",
    "link-to-device": "it is a symbolic link to a device",
    "fifo": "it is a pipe (FIFO)",
    "folder": "it is a folder",
    "link-to-stdout": "it is a symbolic link to a process's open file ('/proc/self/fd/1')",
    "link-to-dev-stdout": "it is a symbolic link to a process's open file ('/proc/self/fd/1')",
}


def kind_of(path: Path) -> tuple:
    info = os.lstat(path)
    return stat.S_IFMT(info.st_mode), info.st_rdev, os.readlink(path) if path.is_symlink() else None


@pytest.mark.parametrize("flag", ["-o", "--report", "recipe -o", "auto -o"])
def test_special_files_are_never_replaced(flag, work, tmp_path, monkeypatch):
    (tmp_path / "specials").mkdir()
    specials = special_files(tmp_path / "specials")
    monkeypatch.chdir(work)
    before = digests(work)
    for name, special in specials.items():
        kind = kind_of(special)
        if flag == "-o":
            argv = ["optimize", "net.onnx", "--recipe", "r.json", "-o", special]
        elif flag == "--report":
            argv = ["optimize", "net.onnx", "--recipe", "r.json", "-o", "out.onnx", "--report", special]
        elif flag == "recipe -o":
            argv = ["recipe", "net.onnx", "-o", special]
        else:
            argv = ["auto", "net.onnx", "--data", "eval.npz", "-o", special]
        message = one_line_error(*run_cli(*argv))
        if name == "dangling-link":
            expected = (f"Cannot write '{special}': it is a symbolic link to '{tmp_path / 'specials/nowhere'}', "
                        "which does not exist, and Slimscope writes only regular files; choose a file name.")  # fmt: skip
        else:
            expected = (f"Cannot write '{special}': {KIND_WORDS[name]}, and Slimscope writes only regular "
                        "files; choose a file name.")  # fmt: skip
        assert message == expected, name
        assert kind_of(special) == kind, name
    assert digests(work) == before
    assert sorted(p.name for p in specials["folder"].iterdir()) == []


def test_the_gui_writers_refuse_special_files_too(tmp_path):
    """export_model, write_json and save_recipe (the window's File → Export and Recipe → Save) share the rule."""
    specials = special_files(tmp_path)
    model = onnx.load(DEMO_MODEL)
    for name, special in specials.items():
        kind = kind_of(special)
        for write in (lambda p: export_model(model, p), lambda p: write_json({"a": 1}, p),
                      lambda p: save_recipe(default_recipe(), p)):  # fmt: skip
            with pytest.raises(ExportError, match="Slimscope writes only regular files"):
                write(special)
            assert kind_of(special) == kind, name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in specials.values())


def test_a_link_to_a_regular_file_is_written_through_and_kept(work, monkeypatch):
    """A symbolic link to a regular file: its target is replaced atomically, the link stays a link."""
    monkeypatch.chdir(work)
    (work / "models").mkdir()
    target = work / "models" / "v3.onnx"
    target.write_bytes(b"the previous version")
    (work / "latest.onnx").symlink_to("models/v3.onnx")
    (work / "recipe-link.json").symlink_to("models/recipe.json")
    (work / "models" / "recipe.json").write_text("{}")
    code, stderr = run_cli("optimize", "net.onnx", "--recipe", "r.json", "-o", "latest.onnx", "--calib",
                           "calib.npz", "--no-latency")  # fmt: skip
    assert code == 0, stderr
    assert os.readlink(work / "latest.onnx") == "models/v3.onnx"
    ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])  # the whole new model
    assert run_cli("recipe", "net.onnx", "-o", "recipe-link.json")[0] == 0
    assert os.readlink(work / "recipe-link.json") == "models/recipe.json"
    assert '"layers"' in (work / "models" / "recipe.json").read_text()
    assert sorted(p.name for p in (work / "models").iterdir()) == ["recipe.json", "v3.onnx"]


# ---------------------------------------------------------------------------------------------------
# 8. Ctrl-C during an export: exit 130, the old output or the whole new one, never a temporary.

# Runs `slimscope ARGV` in a fresh interpreter after PATCH, which arranges for a real SIGINT at one moment
# of the export (a signal sent to itself is handled at the next line of Python, so it lands exactly there).
_PRELUDE = """
import os, signal, sys, tempfile
from slimscope.core.cli import main
state = {"renamed": 0}
real_replace = os.replace
def interrupt():
    os.kill(os.getpid(), signal.SIGINT)
"""
_RUN = "\nsys.exit(main(sys.argv[1:]))\n"

PATCHES = {
    # the case of the issue: the signal lands in a temporary file's finalizer right after the first rename,
    # where Python prints "Exception ignored in ... __del__" and drops the KeyboardInterrupt
    "in-a-finalizer-after-the-first-rename": """
def replace(a, b):
    real_replace(a, b)
    state["renamed"] += 1
os.replace = replace
closer = tempfile._TemporaryFileCloser
real_del = getattr(closer, "__del__", None)
def finalizer(self):
    if state["renamed"] == 1:
        state["renamed"] += 1
        interrupt()
    if real_del is not None:
        real_del(self)
closer.__del__ = finalizer
""",
    "right-after-the-first-rename": """
def replace(a, b):
    real_replace(a, b)
    state["renamed"] += 1
    if state["renamed"] == 1:
        interrupt()
os.replace = replace
""",
    "while-writing-the-temporary-file": """
real_fsync = os.fsync
def fsync(fd):
    real_fsync(fd)
    interrupt()
os.fsync = fsync
""",
    "while-checking-before-any-write": """
import onnx.checker
real_check = onnx.checker.check_model
def check(*args, **kwargs):
    interrupt()
    return real_check(*args, **kwargs)
onnx.checker.check_model = check
""",
}


def answer_ctrl_c() -> None:
    """In the child: Ctrl-C as in a terminal. A test run started in the background of a shell without job
    control inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def optimize_argv(work: Path) -> list[str]:
    return ["optimize", "net.onnx", "--recipe", "r.json", "-o", "out.onnx", "--calib", "calib.npz",
            "--report", "out.json", "--no-latency"]  # fmt: skip


def no_temporaries(folder: Path) -> list[str]:
    return [name for name in os.listdir(folder) if name.startswith(".") or name.endswith(".part")]


@pytest.mark.parametrize("moment", list(PATCHES))
def test_ctrl_c_during_the_export_ends_the_command_with_130(moment, work):
    (work / "out.onnx").write_bytes(b"the previous output")
    inputs = {name: digest(work / name) for name in ("net.onnx", "r.json", "calib.npz")}
    done = subprocess.run(
        [sys.executable, "-c", _PRELUDE + PATCHES[moment] + _RUN, *optimize_argv(work)],
        cwd=work, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        preexec_fn=answer_ctrl_c,
    )  # fmt: skip
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "slimscope: interrupted", done.stderr
    assert "Exception ignored" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    output = (work / "out.onnx").read_bytes()
    if moment == "while-checking-before-any-write":
        assert output == b"the previous output"
    else:  # the whole new model, which onnxruntime runs
        ort.InferenceSession(output, providers=["CPUExecutionProvider"])
    assert not (work / "out.json").exists()  # the command stopped before its report
    assert no_temporaries(work) == []
    assert {name: digest(work / name) for name in inputs} == inputs


@pytest.mark.slow  # over 10 s: CI's second stage
def test_a_real_ctrl_c_at_any_moment_leaves_the_old_or_the_whole_new_output(work):
    """A real `slimscope optimize` process interrupted when its export's temporary file appears, and
    again right after the output was first replaced."""
    old, codes = b"the previous output", []
    for trigger in ("temporary", "renamed"):
        (work / "out.onnx").write_bytes(old)
        (work / "out.json").unlink(missing_ok=True)
        process = subprocess.Popen(
            [sys.executable, "-m", "slimscope", *optimize_argv(work)], cwd=work, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=answer_ctrl_c,
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while process.poll() is None and time.monotonic() < deadline:
            seen = no_temporaries(work) if trigger == "temporary" else (work / "out.onnx").read_bytes() != old
            if seen:
                process.send_signal(signal.SIGINT)
                break
            time.sleep(0.001)
        _, stderr = process.communicate(timeout=300)
        assert process.returncode in (0, 130), stderr  # 0: it had finished when the signal came
        codes.append(process.returncode)
        assert "Exception ignored" not in stderr and "Traceback" not in stderr, stderr
        output = (work / "out.onnx").read_bytes()
        if output != old:
            ort.InferenceSession(output, providers=["CPUExecutionProvider"])
        assert no_temporaries(work) == [], trigger
    assert 130 in codes  # at least one signal came before the end (each moment is tested exactly above)
