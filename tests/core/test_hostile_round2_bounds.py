"""Issue 13, second hostile round: memory and time bounds that really bound (items 5, 6, 7, 9 and 11).

Data and recipe files are checked from what they declare before anything is decoded (a zip bomb, a huge
.npy header, 9000x9000 PNGs, a huge `resize`, /dev/zero, a FIFO, deeply nested JSON); the command line
decodes data in its worker process, under --memory-limit; a PyTorch conversion that prints a lot or hits
the time limit neither deadlocks nor leaves a process behind; --workers stops at the CPU count; float64
data beyond float32 and uint64 labels beyond int64 are refused instead of wrapping.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import struct
import subprocess
import sys
import threading
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from slimscope.core.cli import build_parser, main
from slimscope.core.data import load_dataset
from slimscope.core.errors import DatasetError, RecipeError, WorkerTimeoutError
from slimscope.core.recipe_files import load_recipe
from slimscope.core.task_process import TaskProcess
from slimscope.core.tasks import run_sync
from slimscope.resources import DEMO_MODEL

# ---------------------------------------------------------------------- helpers


def run_cli(argv: list) -> tuple[int, str, str]:
    """`main(argv)` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in argv])
    return code, out.getvalue(), err.getvalue()


def run_cli_process(argv: list, timeout: float = 120) -> subprocess.CompletedProcess:
    """The command in a process of its own, so that a hang fails the test instead of the whole run."""
    code = "import sys; from slimscope.core.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, argv)], capture_output=True, text=True, timeout=timeout
    )


def one_line_refusal(code: int, err: str, *fragments: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("slimscope: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Error:" not in lines[0] and "unexpected" not in lines[0], lines[0]
    return lines[0]


def refused(call, error: type[Exception], *fragments: str) -> str:
    """Call, expecting `error` with a one-line message holding every fragment; the message."""
    with pytest.raises(error) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, {"descr": dtype, "fortran_order": False, "shape": shape})
    return stream.getvalue()


def write_zip_bomb(path: Path, declared_mib: int, member: str = "x.npy") -> None:
    """An .npz whose `member` inflates to `declared_mib` MiB of uint8 zeros from ~1/1000 of that: a valid
    zip (right CRC and sizes), built from one deflated 64 MiB block repeated, so it takes a second."""
    chunk_mib = 64
    assert declared_mib % chunk_mib == 0
    header = npy_header("|u1", (declared_mib, 1, 1024, 1024))
    first = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = first.compress(header) + first.flush(zlib.Z_FULL_FLUSH)  # full flush: later blocks stand alone
    zeros = bytes(chunk_mib << 20)
    block = zlib.compressobj(9, zlib.DEFLATED, -15)
    repeated = block.compress(zeros) + block.flush(zlib.Z_FULL_FLUSH)
    data = head + repeated * (declared_mib // chunk_mib) + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    crc = zlib.crc32(header)
    for _ in range(declared_mib // chunk_mib):
        crc = zlib.crc32(zeros, crc)
    size = len(header) + (declared_mib << 20)
    assert size < 2**32  # no zip64 needed
    name = member.encode()
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(data), size, len(name), 0)
    central = struct.pack(
        "<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, crc, len(data), size, len(name), 0, 0, 0, 0, 0, 0
    )
    directory_at = len(local) + len(name) + len(data)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central) + len(name), directory_at, 0)
    path.write_bytes(local + name + data + central + name + end)


def peak_traced_bytes(call) -> int:
    """The most memory Python and NumPy held at once while `call` ran (it may raise)."""
    tracemalloc.start()
    try:
        with contextlib.suppress(Exception):
            call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def in_thread(call, timeout: float):
    """Run `call` in a thread; fail (instead of hanging the test run) if it blocks past `timeout`."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = call()
        except Exception as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still blocked after {timeout} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("round2")
    write_zip_bomb(folder / "bomb.npz", 2048)
    (folder / "recipe.json").write_text(json.dumps({"version": 1, "defaults": {"prune": None}}))
    np.savez(folder / "small_u8.npz", x=np.full((10, 28, 28), 7, np.uint8), y=np.arange(10) % 10)
    return folder


# ---------------------------------------------------------------------- item 5: .npz


def test_a_zip_bomb_is_refused_from_its_entry_before_anything_is_inflated(files):
    bomb = files / "bomb.npz"
    assert bomb.stat().st_size < 4_000_000
    message = refused(lambda: load_dataset(bomb), DatasetError)
    assert re.fullmatch(
        r"Array 'x' in 'bomb\.npz' would expand from 2\.0 MiB to 2\.0 GiB \(10\d\d times\); Slimscope does "
        r"not unpack archive members that expand more than 100 times\.",
        message,
    ), message
    started = time.monotonic()
    assert peak_traced_bytes(lambda: load_dataset(bomb)) < 20 * 2**20
    assert time.monotonic() - started < 5


def test_a_zip_bomb_given_to_the_command_line_is_one_line(files, tmp_path):
    code, _, err = run_cli(
        ["optimize", DEMO_MODEL, "--recipe", files / "recipe.json", "-o", tmp_path / "o.onnx", "--calib",
         files / "bomb.npz", "--no-latency"]
    )  # fmt: skip
    one_line_refusal(code, err, "would expand from", "bomb.npz")
    assert not (tmp_path / "o.onnx").exists()


def test_an_npy_header_declaring_more_than_the_archive_holds_is_refused(tmp_path):
    path = tmp_path / "huge-header.npz"
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", npy_header("<f4", (10**12, 1, 28, 28)) + bytes(64))
    message = refused(lambda: load_dataset(path), DatasetError, "declares shape [1000000000000, 1, 28, 28]")
    assert message.endswith("the file is damaged.")
    assert peak_traced_bytes(lambda: load_dataset(path)) < 5 * 2**20


def raw_npy_header(header: str) -> bytes:
    """A version 1.0 .npy header holding `header` as written, whatever it says."""
    text = header.encode("latin1")
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text


@pytest.mark.parametrize(
    ("header", "ending"),
    [
        (npy_header("<f4", (1,) * 4000), "has a .npy header that is too long to be read safely."),
        (raw_npy_header("{'descr': '<f4', 'fortran_order': False, 'shape': (-5, 3), }"), "is damaged."),
        (raw_npy_header("{'descr': '<f4', 'shape': (5, 3), }"), "is damaged."),
        (b"PK\x03\x04 not an array at all", "'x' of 'odd.npz' is not a NumPy array."),
    ],
    ids=["header-too-long", "negative-dims", "missing-key", "not-npy"],
)
def test_odd_npy_headers_are_one_sentence(tmp_path, header, ending):
    import zipfile

    path = tmp_path / "odd.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", header + bytes(60))
    message = refused(lambda: load_dataset(path), DatasetError, "'odd.npz'")
    assert message.endswith(ending) and "pickl" not in message, message


def test_only_the_samples_asked_for_are_read(tmp_path):
    path = tmp_path / "many.npz"
    x = np.random.default_rng(0).random((2000, 1, 28, 28), dtype=np.float32)
    np.savez_compressed(path, x=x, y=np.arange(2000) % 10)
    data = load_dataset(path, limit=3)
    np.testing.assert_array_equal(data.x, x[:3])
    np.testing.assert_array_equal(data.y, np.arange(3))
    assert peak_traced_bytes(lambda: load_dataset(path, limit=3)) < x.nbytes / 10
    np.savez(path, x=np.asfortranarray(x[:50]))  # column-major: read whole, then the first samples
    np.testing.assert_array_equal(load_dataset(path, limit=3).x, x[:3])


def test_data_that_would_not_fit_under_the_memory_limit_is_refused_in_the_worker(files, tmp_path):
    """`resize` makes ten 28x28 images 8000x8000 (6.4 GB as float input): under --memory-limit 2 the
    worker reading the data says so before decoding; the command's own process has no such limit."""
    recipe = tmp_path / "resize.json"
    recipe.write_text(json.dumps({"version": 1, "data": {"preprocess": {"resize": 8000}}}))
    code, _, err = run_cli(
        ["optimize", DEMO_MODEL, "--recipe", recipe, "-o", tmp_path / "o.onnx", "--calib",
         files / "small_u8.npz", "--memory-limit", "2"]
    )  # fmt: skip
    line = one_line_refusal(
        code, err, "Reading 'small_u8.npz' would take about", "left under the memory limit"
    )
    assert line.endswith("; use fewer samples or smaller images.")


def test_a_resize_beyond_the_pixel_limit_is_refused_before_decoding(files):
    message = refused(
        lambda: load_dataset(files / "small_u8.npz", {"resize": 100000}),
        DatasetError,
        "The preprocessing's resize makes image 'x[0]' 100000x100000 pixels (10000.0 million)",
    )
    assert message.endswith("Slimscope makes images of at most 67.1 million pixels.")


# ---------------------------------------------------------------------- item 5: image folders


@pytest.fixture(scope="module")
def huge_pngs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("huge-pngs")
    image = Image.new("L", (9000, 9000))
    for name in ("a.png", "b.png"):
        image.save(folder / name, optimize=False, compress_level=1)
    return folder


def test_9000x9000_pngs_are_refused_from_their_headers(huge_pngs):
    assert all(file.stat().st_size < 400_000 for file in huge_pngs.iterdir())
    refused(
        lambda: load_dataset(huge_pngs),
        DatasetError,
        "Image 'a.png' is 9000x9000 pixels (81.0 million); Slimscope reads images of at most 67.1 million pixels.",
    )
    assert peak_traced_bytes(lambda: load_dataset(huge_pngs)) < 5 * 2**20


def test_a_folder_too_large_for_the_memory_left_is_refused_before_decoding(tmp_path):
    """Thirty 4000x4000 images (one file, linked) under an address-space limit 300 MiB above what the
    process has reserved: 4.8 GB to hold, refused from the headers (in a child with that limit)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("L", (4000, 4000)).save(folder / "0.png", compress_level=1)
    for number in range(1, 30):
        (folder / f"{number}.png").symlink_to(folder / "0.png")
    script = f"""
import resource, sys
from slimscope.core.data import load_dataset
from slimscope.core.data.limits import _status_bytes
from slimscope.core.errors import DatasetError
reserved = _status_bytes("/proc/self/status", "VmSize:")
resource.setrlimit(resource.RLIMIT_AS, (reserved + 300 * 2**20, resource.RLIM_INFINITY))
try:
    load_dataset({str(folder)!r})
except DatasetError as exc:
    print(exc)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.stdout.startswith(f"Reading the 30 images in '{folder}' would take about 4.5 GiB"), result
    assert "left under the memory limit; use fewer samples or smaller images." in result.stdout


# ---------------------------------------------------------------------- item 5: special files, recipes


def test_a_fifo_given_as_data_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "data.npz"
    os.mkfifo(fifo)
    with pytest.raises(DatasetError) as caught:
        in_thread(lambda: load_dataset(fifo), timeout=10)
    assert str(caught.value) == f"Data '{fifo}' is not a regular file (a pipe, device or socket)."


def test_a_fifo_given_as_training_data_is_refused_without_blocking(tmp_path):
    import onnx

    from slimscope.core.train.train_data import open_training_data

    fifo = tmp_path / "train.npz"
    os.mkfifo(fifo)
    with pytest.raises(DatasetError) as caught:
        in_thread(lambda: open_training_data(fifo, None, onnx.load(DEMO_MODEL)), timeout=10)
    assert str(caught.value) == f"Data '{fifo}' is not a regular file (a pipe, device or socket)."


def test_a_zip_bomb_given_as_training_labels_is_refused(tmp_path):
    import zipfile

    import onnx

    from slimscope.core.train.train_data import open_training_data

    bomb = tmp_path / "train.npz"
    write_zip_bomb(bomb, 1024, "y.npy")
    x = io.BytesIO()
    np.save(x, np.zeros((10, 1, 28, 28), np.float32))
    with zipfile.ZipFile(bomb, "a") as archive:  # a real x beside the labels' bomb
        archive.writestr("x.npy", x.getvalue())
    refused(
        lambda: open_training_data(bomb, None, onnx.load(DEMO_MODEL)),
        DatasetError,
        "Array 'y' in 'train.npz' would expand from",
    )


def test_a_fifo_given_as_recipe_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "recipe.json"
    os.mkfifo(fifo)
    with pytest.raises(RecipeError) as caught:
        in_thread(lambda: load_recipe(fifo), timeout=10)
    assert str(caught.value) == f"Recipe file '{fifo}' is not a regular file (a pipe, device or socket)."


def test_dev_zero_as_recipe_is_refused_at_once():
    message = refused(lambda: in_thread(lambda: load_recipe("/dev/zero"), timeout=10), RecipeError)
    assert message == "Recipe file '/dev/zero' is not a regular file (a pipe, device or socket)."


def test_a_recipe_larger_than_16_mib_is_refused(tmp_path):
    big = tmp_path / "big.json"
    with open(big, "wb") as file:
        file.truncate(64 * 2**20)  # sparse: nothing is written
    assert refused(lambda: load_recipe(big), RecipeError) == (
        f"Recipe file '{big}' is larger than 16 MiB; a recipe is a few kB."
    )


@pytest.mark.parametrize("depth", [40, 200_000])
def test_deeply_nested_json_recipes_are_refused(tmp_path, depth):
    deep = tmp_path / "deep.json"
    deep.write_text('{"layers": ' + "[" * depth + "]" * depth + "}")
    assert refused(lambda: load_recipe(deep), RecipeError) == (
        f"Recipe file '{deep}' is nested more than 32 levels deep; a recipe is not."
    )


def test_fifos_given_to_the_command_line_do_not_hang(files, tmp_path):
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    result = run_cli_process(
        [
            "optimize",
            DEMO_MODEL,
            "--recipe",
            fifo,
            "-o",
            tmp_path / "o.onnx",
            "--calib",
            files / "small_u8.npz",
        ]
    )
    one_line_refusal(result.returncode, result.stderr, "is not a regular file")
    result = run_cli_process(
        [
            "optimize",
            DEMO_MODEL,
            "--recipe",
            files / "recipe.json",
            "-o",
            tmp_path / "o.onnx",
            "--calib",
            fifo,
        ]
    )
    one_line_refusal(result.returncode, result.stderr, f"Data '{fifo}' is not a regular file")


# ---------------------------------------------------------------------- item 11: checks that wrapped


def test_float64_data_beyond_float32_is_refused(tmp_path):
    path = tmp_path / "f64.npz"
    x = np.full((4, 1, 28, 28), 1.0)
    x[2, 0, 3, 3] = 1e300  # finite, so it passed the NaN check, and became inf as float32
    np.savez(path, x=x)
    assert refused(lambda: load_dataset(path), DatasetError) == (
        "Array 'x' in 'f64.npz' holds values beyond the float32 range (±3.4e+38), which the model cannot take."
    )
    x[2, 0, 3, 3] = -1e300
    np.savez(path, x=x)
    refused(lambda: load_dataset(path), DatasetError, "beyond the float32 range")
    x[2, 0, 3, 3] = 1e30  # large but representable: read
    np.savez(path, x=x)
    assert load_dataset(path).x.dtype == np.float32


def test_uint64_labels_beyond_int64_are_refused_instead_of_wrapping(tmp_path):
    path = tmp_path / "u64.npz"
    np.savez(path, x=np.zeros((3, 1, 28, 28), np.float32), y=np.array([0, 1, 2**63 + 5], dtype=np.uint64))
    assert refused(lambda: load_dataset(path), DatasetError) == (
        "Array 'y' in 'u64.npz' holds class index 9223372036854775813, too large to be a class."
    )
    np.savez(path, x=np.zeros((3, 1, 28, 28), np.float32), y=np.array([0, 1, 9], dtype=np.uint64))
    assert load_dataset(path).y.tolist() == [0, 1, 9]


# ---------------------------------------------------------------------- item 9: --workers


@pytest.mark.parametrize("verb", ["evaluate", "sensitivity"])
def test_workers_beyond_the_cpu_count_are_capped_and_said(verb, capsys):
    from slimscope.core.cli_sensitivity import _executor
    from slimscope.core.evaluate.latency import available_threads

    model = str(DEMO_MODEL)
    head = [model, model] if verb == "evaluate" else [model]
    args = build_parser().parse_args([verb, *head, "--data", "d.npz", "--workers", "64"])
    cpus = available_threads()
    executor = _executor(args)
    try:
        assert (executor.workers if executor is not None else 1) == cpus
    finally:
        if executor is not None:
            executor.close()
    assert capsys.readouterr().err == (
        f"slimscope: --workers 64 is more than the {cpus} CPUs this computer has; using {cpus}.\n"
    )
    args = build_parser().parse_args([verb, *head, "--data", "d.npz", "--workers", "1"])
    assert _executor(args) is None and capsys.readouterr().err == ""


# ---------------------------------------------------------------------- items 6 and 7: PyTorch conversion


@pytest.fixture(scope="module")
def torchscript_files(tmp_path_factory) -> Path:
    """Two trusted TorchScript files: one whose forward prints ~225 kB (more than a pipe holds) each
    run, one whose forward never ends. Built in a child: torch is not imported into the test run."""
    folder = tmp_path_factory.mktemp("torchscript")
    script = f"""
import torch

class Chatty(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)

    def forward(self, x):
        for i in range(1500):
            print("a trusted model that talks a lot while it runs, line", i, "....................................................................")
        return self.conv(x)

class Endless(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)

    def forward(self, x):
        i = 0
        while i >= 0:
            x = x + 1.0
            i += 1
        return self.conv(x)

torch.jit.script(Chatty()).save({str(folder / "chatty.pt")!r})
torch.jit.script(Endless()).save({str(folder / "endless.pt")!r})
"""
    (folder / "build.py").write_text(script)  # TorchScript reads the classes' source from their file
    subprocess.run([sys.executable, folder / "build.py"], check=True, timeout=300, capture_output=True)
    return folder


def test_a_model_that_prints_a_lot_while_converting_converts(torchscript_files):
    from slimscope.core.loading import load_model

    started = time.monotonic()
    loaded = in_thread(
        lambda: load_model(torchscript_files / "chatty.pt", trust=True, input_shapes=[(1, 1, 8, 8)]), 240
    )
    assert "Conv" in [node.op_type for node in loaded.model.graph.node]  # (the print loop stays a Loop)
    print(f"converted in {time.monotonic() - started:.1f} s")


def converters_of(model: Path) -> list[int]:
    """Pids of running `torch_convert` processes converting `model` (by their command line)."""
    pids = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            command = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
            if b"slimscope.core.loading.torch_convert" in command and str(model).encode() in command:
                pids.append(int(entry.name))
    return [pid for pid in pids if _running(pid)]


def wait_until_gone(pids: list[int], seconds: float = 10) -> list[int]:
    deadline = time.monotonic() + seconds
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if _running(pid)]
    return alive


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def drive_until_converting(task, model: Path, seconds: float = 120) -> list[int]:
    """Step the task until the converter of `model` runs; its pids."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        next(task)
        pids = converters_of(model)
        if pids:
            return pids
    raise AssertionError("the conversion never started")


@pytest.mark.slow  # over 5 s: CI's second stage
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_conversion_past_the_time_limit_leaves_no_process(torchscript_files):
    model = torchscript_files / "endless.pt"
    worker = TaskProcess("round2-timeout", time_limits={"load": 8})
    try:
        task = worker.run("load", model, True, [(1, 1, 8, 8)])
        pids = drive_until_converting(task, model)
        with pytest.raises(WorkerTimeoutError) as caught:
            run_sync(task)
        assert str(caught.value) == "Converting this PyTorch file took longer than 8 s and was stopped."
        assert wait_until_gone(pids) == [], "the converter outlived its worker"
    finally:
        worker.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("ending", ["cancel", "timeout"])
def test_run_in_child_ends_what_its_child_started(tmp_path, monkeypatch, ending):
    """A child that starts a grandchild and hangs: cancel or timeout ends both (the whole group)."""
    from slimscope.core.errors import ConversionError
    from slimscope.core.tasks import run_in_child

    (tmp_path / "spawner.py").write_text(
        "import subprocess, sys, time\n"
        "grandchild = subprocess.Popen(['sleep', '300'])\n"
        f"open({str(tmp_path / 'pids')!r}, 'w').write(f'{{grandchild.pid}}')\n"
        "time.sleep(300)\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    task = run_in_child("spawner", [], message="Spawning", timeout=None if ending == "cancel" else 4)
    deadline = time.monotonic() + 60
    while not (tmp_path / "pids").exists() or not (tmp_path / "pids").read_text():
        next(task)
        assert time.monotonic() < deadline
    grandchild = int((tmp_path / "pids").read_text())
    assert _running(grandchild)
    if ending == "cancel":
        task.close()
    else:
        with pytest.raises(ConversionError, match="^Spawning took longer than 4 s and was stopped.$"):
            run_sync(task)
    assert wait_until_gone([grandchild], 10) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_cancelled_conversion_ends_its_process_group(torchscript_files):
    from slimscope.core.loading import iter_load_model

    model = torchscript_files / "endless.pt"
    task = iter_load_model(model, trust=True, input_shapes=[(1, 1, 8, 8)])
    pids = drive_until_converting(task, model)
    task.close()  # cancel
    assert wait_until_gone(pids, 10) == []
    assert converters_of(model) == []
