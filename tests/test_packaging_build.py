"""The packaged app: PyInstaller builds it from this checkout (slow) and it works on a clean environment;
plus the fast checks of what packaging/ holds (the frozen entry's argument handling, the desktop launcher,
the window's own smoke test)."""

from __future__ import annotations

import configparser
import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"
BUILD_TIMEOUT_S = 1800  # measured 110-335 s on the 2-core machine (the longer with other jobs running)


def _load_frozen_entry():
    spec = importlib.util.spec_from_file_location("frozen_entry", PACKAGING / "frozen_entry.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["-m", "slimscope.core.loading.torch_convert", "a", "b"],
            ("slimscope.core.loading.torch_convert", ["a", "b"]),
        ),
        (["-u", "-X", "utf8", "-I", "-m", "slimscope.x"], ("slimscope.x", [])),
        (["inspect", "-m", "slimscope.x"], (None, [])),  # `-m` after a verb is the verb's business
        (["-m"], (None, [])),
        ([], (None, [])),
        (["--smoke-test"], (None, [])),
    ],
)
def test_frozen_entry_recognises_python_style_module_runs(argv, expected):
    assert _load_frozen_entry()._module_to_run(argv) == expected


def test_frozen_entry_runs_only_slimscope_modules(capsys):
    entry = _load_frozen_entry()
    assert entry._run_module("os", []) == 2
    assert "only Slimscope's own modules" in capsys.readouterr().err


def test_desktop_file_is_valid():
    desktop = configparser.ConfigParser(interpolation=None)
    desktop.optionxform = str  # keys are case-sensitive
    desktop.read(PACKAGING / "slimscope.desktop", encoding="utf-8")
    entry = desktop["Desktop Entry"]
    assert entry["Type"] == "Application" and entry["Name"] == "Slimscope"
    assert entry["Exec"] == "slimscope gui %f"  # `gui`: without a terminal, plain `slimscope` prints text
    assert entry["Icon"] == "slimscope" and entry["Terminal"] == "false"
    assert entry["MimeType"] == "application/x-onnx;"
    assert (ROOT / "resources" / "icons" / "slimscope.svg").is_file()
    assert (ROOT / "resources" / "icons" / "slimscope.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    validator = shutil.which("desktop-file-validate")
    if validator:  # Debian's desktop-file-utils; hints (several main categories) are not errors
        result = subprocess.run(
            [validator, str(PACKAGING / "slimscope.desktop")], capture_output=True, text=True
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_install_desktop_puts_launcher_icon_and_file_type_under_xdg_data_home(tmp_path):
    fake_app = tmp_path / "my apps" / "slimscope"
    fake_app.parent.mkdir()
    fake_app.write_text("#!/bin/sh\n")
    fake_app.chmod(0o755)
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "share"))
    subprocess.run(
        [str(PACKAGING / "install_desktop.sh"), str(fake_app)], env=env, check=True, capture_output=True
    )
    share = tmp_path / "share"
    launcher = (share / "applications" / "slimscope.desktop").read_text()
    assert f'Exec="{fake_app}" gui %f' in launcher and f"TryExec={fake_app}" in launcher
    assert (share / "icons/hicolor/256x256/apps/slimscope.png").is_file()
    assert (share / "icons/hicolor/scalable/apps/slimscope.svg").is_file()
    assert "*.onnx" in (share / "mime/packages/slimscope-onnx.xml").read_text()
    subprocess.run(
        [str(PACKAGING / "install_desktop.sh"), "--uninstall"], env=env, check=True, capture_output=True
    )
    assert not (share / "applications" / "slimscope.desktop").exists()


def _smoke_test(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    return subprocess.run(
        [sys.executable, "-m", "slimscope.gui.smoke_test", *args],
        env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_window_smoke_test_passes_on_the_demo():
    result = _smoke_test("--timeout", "150")
    assert result.returncode == 0, result.stderr
    assert "smoke test: OK" in result.stdout and "first comparison" in result.stdout


def test_window_smoke_test_fails_with_the_error_on_stderr(tmp_path):
    result = _smoke_test(str(tmp_path / "missing.onnx"), "--timeout", "60")
    assert result.returncode == 1
    assert "FAILED" in result.stderr and "missing.onnx" in result.stderr


# ---------------------------------------------------------------------- the build (slow)


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """What a fresh machine would have: no venv on PATH, no PYTHONPATH, a home and temp folder of its own."""
    (tmp_path / "home").mkdir(exist_ok=True)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path / "home"), "TMPDIR": str(tmp_path / "tmp"),
            "LANG": "C.UTF-8", "QT_QPA_PLATFORM": "offscreen"}  # fmt: skip


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Iterator[Path]:
    """packaging/build.sh into a temporary folder, with this test run's interpreter; the app folder."""
    if importlib.util.find_spec("PyInstaller") is None:
        pytest.skip("PyInstaller is not installed (it comes with the test extra: pip install '.[test]')")
    out = tmp_path_factory.mktemp("dist")
    log = out.parent / "build.log"
    with log.open("w") as output:
        result = subprocess.run(
            ["bash", str(PACKAGING / "build.sh"), str(out)],
            env=dict(os.environ, PYTHON=sys.executable), stdout=output, stderr=subprocess.STDOUT,
            timeout=BUILD_TIMEOUT_S, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    assert result.returncode == 0, log.read_text()[-5000:]
    yield out / "slimscope"
    shutil.rmtree(out, ignore_errors=True)  # about 1 GB; pytest keeps its last three temporary folders


@pytest.mark.slow
def test_built_app_passes_its_smoke_test(bundle):
    result = subprocess.run(
        ["bash", str(PACKAGING / "smoke_test.sh"), str(bundle.parent)],
        capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed, 0 failed" in result.stdout


@pytest.mark.slow
def test_built_app_holds_what_it_reads_at_run_time(bundle):
    internal = bundle / "_internal"
    for needed in (
        "slimscope/resources/demo/digits_net.onnx",
        "slimscope/resources/demo/digits_test.npz",
        "slimscope/resources/demo/digits_calib.npz",
        "slimscope/resources/demo/digits_train.npz",
        "slimscope/resources/icons/slimscope.png",
        "slimscope/core/recipe.schema.json",
        "netron/index.html",
        "PySide6/Qt/plugins/platforms/libqoffscreen.so",
        "PySide6/Qt/plugins/platforms/libqxcb.so",
        "onnxruntime/transformers/fusion_utils.py",  # imported by a top-level name by the quantizer
        "onnxscript/function_libs/torch_lib/ops/core.py",  # compiled from source when .pt2 files convert
    ):
        assert (internal / needed).is_file(), needed
    for desktop_file in ("slimscope.desktop", "install_desktop.sh", "slimscope-mime.xml", "slimscope.svg"):
        assert (bundle / "desktop" / desktop_file).is_file(), desktop_file
    for left_out in ("pytest", "ray", "scipy", "pandas", "slimscope/resources/build_demo.py"):
        assert not (internal / left_out).exists(), left_out


def _make_pytorch_files(folder: Path) -> None:
    """A TorchScript file and a torch.export program of a tiny network, made with this venv's torch."""
    script = textwrap.dedent(
        f"""
        import warnings
        warnings.simplefilter("ignore")
        import torch
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                  torch.nn.Linear(72, 3)).eval()
        x = torch.zeros(1, 1, 8, 8)
        torch.jit.save(torch.jit.trace(net, x), {str(folder / "tiny.pt")!r})
        torch.export.save(torch.export.export(net, (x,)), {str(folder / "tiny.pt2")!r})
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=300)


@pytest.mark.slow
def test_built_app_converts_pytorch_files_in_its_child_process(bundle, tmp_path):
    """The conversion runs as `sys.executable -m slimscope.core.loading.torch_convert`: in the bundle,
    sys.executable is the app itself (frozen_entry.py runs the module), with its own torch and onnxscript."""
    _make_pytorch_files(tmp_path)
    for name, extra, kind in (
        ("tiny.pt", ["--input-shape", "1x1x8x8"], "TorchScript file"),
        ("tiny.pt2", [], "torch.export program"),
    ):
        result = subprocess.run(
            [str(bundle / "slimscope"), "inspect", str(tmp_path / name), "--trust", *extra],
            env=_clean_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert f"Converted from a {kind}" in result.stdout and "2 layers" in result.stdout


@pytest.mark.slow
def test_built_app_retrains_the_demo(bundle, tmp_path):
    demo = bundle / "_internal" / "slimscope" / "resources" / "demo"
    recipe = tmp_path / "recipe.json"
    recipe.write_text(
        '{"version": 1, "defaults": {"prune": {"sparsity": 0.5, "scope": "global"}, "quantize": null}, '
        '"layers": {}, "training": {"steps": 1, "final_epochs": 1, "max_batches_per_epoch": 2, '
        '"batch_size": 32, "val_fraction": 0.05}}'
    )
    out = tmp_path / "retrained.onnx"
    result = subprocess.run(
        [str(bundle / "slimscope"), "finetune", str(demo / "digits_net.onnx"), "--recipe", str(recipe),
         "--train", str(demo / "digits_train.npz"), "-o", str(out), "--checkpoints", str(tmp_path / "ckpt")],
        env=_clean_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "retrained" in result.stdout and out.stat().st_size > 0
