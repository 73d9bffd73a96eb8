"""The wheel holds the namespaced package with its data, and nothing called plain `core` or `gui`; installed
(not editable) into a fresh venv, it gives a working `slimscope` command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("source")
    # Build from a copy: setuptools writes build/ and *.egg-info beside the sources it builds.
    for folder in ("core", "gui", "resources", "packaging"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(source),
        ],
        check=True,
    )
    (built,) = out.glob("slimscope-*.whl")
    return built


@pytest.fixture(scope="module")
def wheel_names(wheel) -> list[str]:
    return zipfile.ZipFile(wheel).namelist()


def test_wheel_has_namespaced_packages_and_data(wheel_names):
    for expected in (
        "slimscope/__init__.py",
        "slimscope/__main__.py",
        "slimscope/core/cli.py",
        "slimscope/core/loading/onnx_loader.py",
        "slimscope/core/recipe.schema.json",
        "slimscope/resources/demo/digits_net.onnx",
        "slimscope/resources/demo/digits_test.npz",
        "slimscope/resources/icons/slimscope.svg",
        "slimscope/resources/icons/slimscope.png",
    ):
        assert expected in wheel_names


def test_wheel_has_every_core_subpackage(wheel_names):
    for init in (ROOT / "core").rglob("__init__.py"):
        relative = init.relative_to(ROOT / "core").as_posix()
        assert f"slimscope/core/{relative}" in wheel_names, (
            f"{relative} is missing from pyproject's package list"
        )


def test_wheel_has_no_plain_top_level_packages(wheel_names):
    top = {name.split("/", 1)[0] for name in wheel_names}
    assert top <= {"slimscope"} | {n for n in top if n.endswith(".dist-info")}
    assert not any(name.startswith(("tests/", "core/", "gui/", "benchmarks/")) for name in wheel_names)


def test_installed_demo_model_opens():
    from slimscope.core.loading import load_model
    from slimscope.resources import DEMO_DATA, DEMO_MODEL

    loaded = load_model(DEMO_MODEL)
    assert loaded.input_shapes["input"][1:] == (1, 28, 28)
    assert DEMO_DATA.is_file()


def test_wheel_installs_a_working_slimscope_command(wheel, tmp_path):
    """`pip install` of the built wheel (not editable) into a fresh venv: its `slimscope` command answers and
    inspects the demo model of the installed copy. The test runs offline, so the dependencies come from this
    test run's site-packages through a .pth file (CI's set-up, `pip install ".[test]"`, resolves them)."""
    venv = tmp_path / "fresh venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True, cwd=tmp_path,  # not the checkout: a `pip install .` leaves slimscope.egg-info there, which
    )  # fmt: skip  # pip would take for an installed slimscope and install nothing
    # Only now the dependencies (before, pip would see this run's own slimscope and install nothing).
    # A plain path line adds the folder only: the editable install's own .pth there is not run.
    (site_packages,) = (venv / "lib").glob("python3*/site-packages")
    dependencies = [entry for entry in sys.path if entry.endswith("site-packages")]
    (site_packages / "test_run_dependencies.pth").write_text("\n".join(dependencies) + "\n")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}

    def run(*command: str | Path) -> str:
        result = subprocess.run([str(c) for c in command], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert run(venv / "bin" / "slimscope", "--version").strip() == "slimscope 0.1.0"
    locate = (
        "from slimscope.resources import DEMO_MODEL, APP_ICON; print(DEMO_MODEL); print(APP_ICON.is_file())"
    )
    demo_model, icon_found = run(python, "-c", locate).splitlines()
    assert Path(demo_model).is_relative_to(site_packages) and icon_found == "True"
    assert "17 layers" in run(venv / "bin" / "slimscope", "inspect", demo_model)
