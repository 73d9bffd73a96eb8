"""The wheel holds the namespaced package with its data, and nothing called plain `core` or `gui`."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> list[str]:
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
    (wheel,) = out.glob("slimscope-*.whl")
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
