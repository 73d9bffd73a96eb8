"""`slimscope.core` never imports Qt: checked statically (import-linter) and by running it with Qt blocked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
QT_MODULES = ("PySide6", "PySide2", "PyQt5", "PyQt6", "pyqtgraph", "superqt", "qtpy")


def run_lint_imports(cwd: Path, *config: str) -> subprocess.CompletedProcess:
    # --no-cache: import-linter would otherwise write .import_linter_cache into the working directory.
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-logo", "--no-cache", *config],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def staged_package(root: Path) -> Path:
    """The installed layout (slimscope/, slimscope/core/, slimscope/gui/) copied under `root`, with the
    repository's import-linter contracts (their options placed where import-linter reads them)."""
    package = root / "slimscope"
    shutil.copytree(REPO / "packaging" / "slimscope", package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "core", package / "core", ignore=shutil.ignore_patterns("__pycache__"))
    if (REPO / "gui" / "__init__.py").exists():
        shutil.copytree(REPO / "gui", package / "gui", ignore=shutil.ignore_patterns("__pycache__"))
    else:
        (package / "gui").mkdir()
        (package / "gui" / "__init__.py").write_text("")
    settings = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    contracts = settings.pop("contracts")
    assert any("slimscope.core" in c.get("source_modules", []) for c in contracts)
    for contract in contracts:
        if "include_external_packages" in contract:  # a top-level option, wherever the file puts it
            settings["include_external_packages"] = contract.pop("include_external_packages")
    lines = ["[tool.importlinter]", *(f"{key} = {_toml(value)}" for key, value in settings.items())]
    for contract in contracts:
        lines += ["", "[[tool.importlinter.contracts]]"]
        lines += [f"{key} = {_toml(value)}" for key, value in contract.items()]
    (root / "pyproject.toml").write_text("\n".join(lines) + "\n")
    return package


def _toml(value) -> str:
    return json.dumps(value)  # strings, lists of strings and booleans are the same in JSON and TOML


def test_import_contract_holds_for_the_installed_layout(tmp_path):
    staged_package(tmp_path)
    result = run_lint_imports(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "KEPT" in result.stdout and "BROKEN" not in result.stdout


@pytest.mark.parametrize(
    "offending",
    ["import pyqtgraph\n", "from slimscope.core import errors\nfrom PySide6 import QtCore\n"],
    ids=["pyqtgraph", "PySide6"],
)
def test_import_contract_catches_a_qt_import(tmp_path, offending):
    """The contract really bites: a core module importing Qt breaks it (control for the test above)."""
    package = staged_package(tmp_path)
    (package / "core" / "leaky.py").write_text(offending)
    result = run_lint_imports(tmp_path)
    assert result.returncode == 1
    assert "BROKEN" in result.stdout and "slimscope.core.leaky" in result.stdout


# ---------------------------------------------------------------- running core with Qt unimportable

CHILD = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys

    BLOCKED = {blocked!r}

    class BlockQt:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED or name == "slimscope.gui" or name.startswith("slimscope.gui."):
                raise ImportError(f"{{name}} is blocked: slimscope.core must run without Qt")
            return None

    sys.meta_path.insert(0, BlockQt())
    for name in BLOCKED:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
        else:
            raise SystemExit(f"the blocker let {{name}} through")

    import slimscope.core

    def fail(name):
        raise ImportError(f"cannot import {{name}}")

    imported = []
    for info in pkgutil.walk_packages(slimscope.core.__path__, "slimscope.core.", onerror=fail):
        importlib.import_module(info.name)
        imported.append(info.name)

    from slimscope.core.cli import main

    code = main(["inspect", {model!r}])
    qt = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED or m.startswith("slimscope.gui"))
    print(json.dumps({{"code": code, "imported": imported, "qt": qt}}))
    """
)


def tiny_conv_model(path: Path) -> Path:
    weight = np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3) - 20.0
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="only_conv")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3])],
        [numpy_helper.from_array(weight, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def run_blocked(tmp_path: Path, blocked: tuple[str, ...]) -> subprocess.CompletedProcess:
    model = tiny_conv_model(tmp_path / "tiny.onnx")
    script = CHILD.format(blocked=blocked, model=str(model))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QT_", "PYTHONPATH"))}
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
    )


def test_blocking_a_module_core_needs_does_fail(tmp_path):
    """Control: the blocker works, so the test below would notice a Qt import (jsonschema: recipe.py)."""
    result = run_blocked(tmp_path, ("jsonschema",))
    assert result.returncode != 0
    assert "ImportError: jsonschema is blocked" in result.stderr


def test_core_runs_with_qt_unimportable(tmp_path):
    result = run_blocked(tmp_path, QT_MODULES)
    assert result.returncode == 0, result.stderr
    *table, answer_line = result.stdout.strip().splitlines()
    answer = json.loads(answer_line)
    assert answer["code"] == 0, result.stderr
    assert answer["qt"] == []
    expected = {
        f"slimscope.core.{p.relative_to(REPO / 'core').with_suffix('').as_posix().replace('/', '.')}"
        for p in (REPO / "core").rglob("*.py")
        if p.name != "__init__.py" and "__pycache__" not in p.parts
    }
    assert expected <= set(answer["imported"]), expected - set(answer["imported"])
    assert {"slimscope.core.cli", "slimscope.core.stats", "slimscope.core.loading.onnx_loader"} <= set(
        answer["imported"]
    )
    assert any(line.startswith("only_conv") and "Conv" in line for line in table), result.stdout


@pytest.mark.slow  # over 10 s: CI's second stage
def test_core_type_checks(tmp_path):
    """mypy on slimscope.core, laid out as installed (the editable mapping hides it from mypy)."""
    staged_package(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"), "--cache-dir",
         str(tmp_path / ".mypy_cache"), "-p", "slimscope.core"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
