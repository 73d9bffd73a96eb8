"""`slimscope optimize` and `slimscope evaluate` on the demo model: the JSON report, the written file
(checked, runnable, with the recipe and report embedded), the human summary, one real process, and
refusals that print one line, exit 2 and write nothing."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest

from slimscope.core.cli import main
from slimscope.core.layers import find_layers
from slimscope.core.recipe_files import dumps_recipe, load_recipe, loads_recipe
from slimscope.core.recipe_presets import preset_recipe
from slimscope.resources import DEMO_CALIBRATION, DEMO_DATA, DEMO_MODEL

CLASSIFIER = "/classifier/Gemm"
LAYER_NAMES = [layer.name for layer in find_layers(onnx.load(DEMO_MODEL), {})]
REPORT_KEYS = {"accuracy", "agreement", "sqnr_db", "cosine", "latency_ms", "size_bytes", "gzip_bytes"}
REPORT_KEYS |= {"nonzero_params", "layers", "forms", "notes"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """`main(argv)` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in argv])
    return code, out.getvalue(), err.getvalue()


def top1(model: onnx.ModelProto | Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0].argmax(axis=1)


@dataclass(frozen=True)
class Workspace:
    source: Path  # a copy of the demo model, alone in its folder
    recipe: Path  # int8 + 50 % global pruning, classifier not pruned
    prune_recipe: Path  # pruning only: needs no calibration
    calib: Path  # 64 calibration images
    test: Path  # 200 labelled test images
    wrong_shape: Path  # 3×32×32 samples
    source_digest: str


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    model_dir = tmp_path_factory.mktemp("model")
    data = tmp_path_factory.mktemp("data")
    source = model_dir / "digits_net.onnx"
    shutil.copy(DEMO_MODEL, source)
    with np.load(DEMO_DATA) as test, np.load(DEMO_CALIBRATION) as calib:
        np.savez(data / "test200.npz", x=test["x"][:200], y=test["y"][:200])
        np.savez(data / "calib64.npz", x=calib["x"][:64])
    np.savez(data / "rgb32.npz", x=np.zeros((8, 3, 32, 32), np.float32))
    recipe = preset_recipe("sparse-50").with_layer(CLASSIFIER, prune=None)
    (data / "recipe.json").write_text(dumps_recipe(recipe))
    (data / "prune.json").write_text(dumps_recipe(recipe.with_defaults(quantize=None)))
    return Workspace(
        source,
        data / "recipe.json",
        data / "prune.json",
        data / "calib64.npz",
        data / "test200.npz",
        data / "rgb32.npz",
        sha256(source),
    )


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str
    output: Path
    report: Path

    @property
    def data(self) -> dict:
        return json.loads(self.stdout)


@pytest.fixture(scope="module")
def evaluated(workspace, tmp_path_factory) -> Run:
    """optimize --calib --eval --report --json, with latency measured: the run most tests read."""
    out = tmp_path_factory.mktemp("out")
    output, report = out / "optimized.onnx", out / "report.json"
    argv = ["optimize", workspace.source, "--recipe", workspace.recipe, "-o", output]
    argv += ["--calib", workspace.calib, "--eval", workspace.test, "--report", report, "--json"]
    return Run(*run_cli(argv), output, report)


def test_optimize_with_eval_prints_the_report_as_json(evaluated):
    assert evaluated.code == 0, evaluated.stderr
    assert evaluated.stderr == ""
    report = evaluated.data
    assert not REPORT_KEYS - set(report), set(report)
    assert set(report["accuracy"]) == {"original", "optimized"}
    assert report["accuracy"]["original"] >= 0.97
    assert abs(report["accuracy"]["optimized"] - report["accuracy"]["original"]) <= 0.03
    assert 0.95 <= report["agreement"] <= 1.0
    assert report["sqnr_db"] > 5 and 0.9 < report["cosine"] <= 1.0
    assert report["latency_ms"]["original"] > 0 and report["latency_ms"]["optimized"] > 0
    for key in ("size_bytes", "gzip_bytes", "nonzero_params"):
        assert set(report[key]) >= {"original", "optimized"}, key
        assert 0 < report[key]["optimized"] < report[key]["original"], key
    assert report["size_bytes"]["original"] == DEMO_MODEL.stat().st_size
    assert report["size_bytes"]["optimized"] < 0.4 * report["size_bytes"]["original"]  # int8 weights
    assert report["nonzero_params"]["optimized"] < 0.6 * report["nonzero_params"]["original"]  # 50 % pruned
    assert [layer["name"] for layer in report["layers"]] == LAYER_NAMES
    assert all(isinstance(layer["sqnr_db"], float) for layer in report["layers"])
    assert set(report["forms"]) == set(LAYER_NAMES)
    assert "int8 weights per-channel" in report["forms"][CLASSIFIER]
    assert "zero" not in report["forms"][CLASSIFIER]  # not pruned: the recipe says so
    assert isinstance(report["notes"], list)


def test_the_written_model_is_valid_runs_and_carries_recipe_and_report(evaluated, workspace):
    assert evaluated.output.is_file()
    onnx.checker.check_model(str(evaluated.output))
    model = onnx.load(evaluated.output)
    metadata = {prop.key: prop.value for prop in model.metadata_props}
    assert loads_recipe(metadata["slimscope.recipe"]) == load_recipe(workspace.recipe)
    assert json.loads(metadata["slimscope.report"]) == evaluated.data
    # The agreement it reports is the agreement the file has, on the same 200 images.
    with np.load(workspace.test) as test:
        x = test["x"]
    agreement = (top1(evaluated.output, x) == top1(workspace.source, x)).mean()
    assert agreement == pytest.approx(evaluated.data["agreement"])


def test_report_file_holds_the_same_json_and_nothing_else_is_left(evaluated, workspace):
    assert json.loads(evaluated.report.read_text()) == evaluated.data
    assert sorted(os.listdir(evaluated.output.parent)) == ["optimized.onnx", "report.json"]
    assert os.listdir(workspace.source.parent) == ["digits_net.onnx"]
    assert sha256(workspace.source) == workspace.source_digest


def test_the_reported_size_is_the_size_of_the_file_written(evaluated):
    assert evaluated.data["size_bytes"]["optimized"] == evaluated.output.stat().st_size


def test_optimize_without_eval_prints_a_summary_with_sizes(capsys, workspace, tmp_path):
    output = tmp_path / "summary.onnx"
    argv = ["optimize", workspace.source, "--recipe", workspace.recipe, "-o", output]
    code = main([*map(str, argv), "--calib", str(workspace.calib), "--no-latency"])
    captured = capsys.readouterr()
    assert code == 0 and captured.err == ""
    lines = captured.out.splitlines()
    assert lines[0] == f"wrote {output}"
    rows = {line.split("  ")[0]: line for line in lines if line.startswith(("size", "gzip", "non-zero"))}
    assert set(rows) == {"size on disk", "gzip size", "non-zero weights"}
    # label, original, optimized, ratio: the demo's 1.1 MB shrinks to about a third with int8 weights
    size = re.fullmatch(r"size on disk +1\.1 MB +[0-9.]+ kB +(0\.[0-9]+)x", rows["size on disk"])
    assert size and float(size[1]) < 0.4, rows["size on disk"]
    nonzero = re.fullmatch(r"non-zero weights +275\.05k +[0-9.]+k +(0\.[0-9]+)x", rows["non-zero weights"])
    assert nonzero and float(nonzero[1]) < 0.6, rows["non-zero weights"]
    assert "accuracy" not in captured.out and "latency" not in captured.out  # nothing was measured
    assert output.is_file()


def test_evaluate_agrees_with_the_optimize_report(capsys, evaluated, workspace):
    argv = [
        "evaluate",
        workspace.source,
        evaluated.output,
        "--data",
        workspace.test,
        "--json",
        "--no-latency",
    ]
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    assert code == 0 and captured.err == ""
    report, optimized = json.loads(captured.out), evaluated.data
    assert report["samples"] == optimized["samples"] == 200
    assert report["agreement"] == optimized["agreement"]
    assert report["accuracy"] == optimized["accuracy"]
    assert report["sqnr_db"] == pytest.approx(optimized["sqnr_db"], rel=1e-6)
    assert report["latency_ms"] is None
    assert report["size_bytes"]["original"] == optimized["size_bytes"]["original"]
    assert report["size_bytes"]["optimized"] == evaluated.output.stat().st_size


def test_optimize_in_a_real_process(workspace, tmp_path):
    output = tmp_path / "process.onnx"
    argv = [
        "optimize",
        workspace.source,
        "--recipe",
        workspace.recipe,
        "-o",
        output,
        "--calib",
        workspace.calib,
    ]
    completed = subprocess.run(
        [sys.executable, "-m", "slimscope", *map(str, argv), "--json", "--no-latency"],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    report = json.loads(completed.stdout)  # stdout holds the JSON and nothing else
    assert report["output"] == str(output)
    assert report["size_bytes"]["optimized"] < report["size_bytes"]["original"]
    with np.load(workspace.test) as test:
        x = test["x"][:100]
    assert (top1(output, x) == top1(workspace.source, x)).mean() >= 0.95


# ---------------------------------------------------------------------------------------------------
# Refusals: exit code 2, one line on stderr, no traceback, no output file.


def _output_is_source(ws: Workspace, tmp: Path) -> tuple[list, Path]:
    return ["--recipe", ws.recipe, "-o", ws.source, "--calib", ws.calib], ws.source


def _missing_recipe(ws: Workspace, tmp: Path) -> tuple[list, Path]:
    return ["--recipe", tmp / "no-such-recipe.json", "-o", tmp / "out" / "o.onnx", "--calib", ws.calib], tmp


def _weight_bits_9(ws: Workspace, tmp: Path) -> tuple[list, Path]:
    data = json.loads(ws.recipe.read_text())
    data["defaults"]["quantize"]["weight_bits"] = 9
    (tmp / "bits9.json").write_text(json.dumps(data))
    return ["--recipe", tmp / "bits9.json", "-o", tmp / "out" / "o.onnx", "--calib", ws.calib], tmp


def _no_calibration(ws: Workspace, tmp: Path) -> tuple[list, Path]:
    return ["--recipe", ws.recipe, "-o", tmp / "out" / "o.onnx"], tmp


def _wrong_shape(ws: Workspace, tmp: Path) -> tuple[list, Path]:
    return ["--recipe", ws.recipe, "-o", tmp / "out" / "o.onnx", "--calib", ws.wrong_shape], tmp


def _missing_folder(ws: Workspace, tmp: Path) -> tuple[list, Path]:
    return ["--recipe", ws.prune_recipe, "-o", tmp / "out" / "missing" / "o.onnx"], tmp


def _unknown_layer(ws: Workspace, tmp: Path) -> tuple[list, Path]:
    data = json.loads(ws.recipe.read_text())
    data["layers"]["/blocks/blocks.9/Conv"] = {"quantize": None}
    (tmp / "unknown.json").write_text(json.dumps(data))
    return ["--recipe", tmp / "unknown.json", "-o", tmp / "out" / "o.onnx", "--calib", ws.calib], tmp


REFUSALS: dict[str, tuple[Callable[[Workspace, Path], tuple[list, Path]], str]] = {
    "output-is-source": (_output_is_source, "would overwrite"),
    "missing-recipe": (_missing_recipe, "Cannot read recipe file"),
    "weight-bits-9": (_weight_bits_9, "field 'quantize.weight_bits'"),
    "no-calibration": (_no_calibration, "calibration data"),
    "wrong-shape-calibration": (_wrong_shape, "3-channel 32x32 images; the model expects 1x28x28"),
    "output-folder-missing": (_missing_folder, "does not exist"),
    "unknown-layer": (_unknown_layer, "'/blocks/blocks.9/Conv'"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_refusals_print_one_line_exit_2_and_write_nothing(case, capsys, workspace, tmp_path):
    build, message = REFUSALS[case]
    (tmp_path / "out").mkdir()
    options, _ = build(workspace, tmp_path)
    source_folder = sorted(os.listdir(workspace.source.parent))
    code = main(["optimize", str(workspace.source), *map(str, options)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("slimscope: error: ") and message in lines[0], lines[0]
    assert "Traceback" not in captured.err and "unexpected" not in captured.err
    assert os.listdir(tmp_path / "out") == []  # no output file, no temporary file
    assert sorted(os.listdir(workspace.source.parent)) == source_folder
    assert sha256(workspace.source) == workspace.source_digest


# ---------------------------------------------------------------------------------------------------
# --report: where the report goes is not checked like the model's output.


@pytest.fixture
def own_source(tmp_path) -> Path:
    """A private copy of the demo model (these tests may destroy it)."""
    folder = tmp_path / "model"
    folder.mkdir()
    return Path(shutil.copy(DEMO_MODEL, folder / "digits_net.onnx"))


def test_report_over_the_source_model_is_refused(capsys, workspace, own_source, tmp_path):
    digest = sha256(own_source)
    argv = ["optimize", own_source, "--recipe", workspace.prune_recipe, "-o", tmp_path / "o.onnx"]
    code = main([*map(str, argv), "--report", str(own_source)])
    captured = capsys.readouterr()
    assert sha256(own_source) == digest, "the source model was overwritten by the report"
    assert code == 2 and len(captured.err.splitlines()) == 1


def test_report_over_the_output_model_is_refused(capsys, workspace, tmp_path):
    output = tmp_path / "o.onnx"
    argv = ["optimize", workspace.source, "--recipe", workspace.prune_recipe, "-o", output]
    code = main([*map(str, argv), "--report", str(output)])
    captured = capsys.readouterr()
    assert code == 2 and len(captured.err.splitlines()) == 1, (code, captured.err)
    assert not output.exists() or onnx.load(output).graph.node  # never a model replaced by JSON


def test_report_in_a_missing_folder_is_refused_before_anything_is_written(capsys, workspace, tmp_path):
    output = tmp_path / "o.onnx"
    argv = ["optimize", workspace.source, "--recipe", workspace.prune_recipe, "-o", output]
    code = main([*map(str, argv), "--report", str(tmp_path / "missing" / "report.json")])
    captured = capsys.readouterr()
    assert code == 2 and len(captured.err.splitlines()) == 1, (code, captured.err)
    assert not output.exists(), "the command failed but wrote its output model"
