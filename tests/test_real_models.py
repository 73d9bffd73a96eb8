"""The development set of pretrained models (benchmarks/real_models.py) through the command line as a user
runs it: the recipe template optimizes and evaluates every model, and nothing from onnx's or
onnxruntime's internals reaches the user. The models are downloaded once by
`python benchmarks/real_models.py --fetch-only` into a cache outside the repository; a model that is not
there is skipped, so the suite passes offline without them. Marked `real_models` (run in CI's second stage).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import real_models  # benchmarks/ is on the test path (pyproject: pythonpath)

pytestmark = pytest.mark.real_models

INTERNALS = (
    "unexpected",
    "Traceback",
    "ValidationError",
    "foo.bin",
    "onnxruntime_pybind11",
    "[ONNXRuntimeError]",
)


def _cached(model: real_models.RealModel) -> real_models.RealModel:
    if not model.file.exists():
        pytest.skip(
            f"{model.name} is not in the cache ({model.file}); run benchmarks/real_models.py --fetch-only"
        )
    return model


def _slimscope(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slimscope", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=1200)  # fmt: skip


@pytest.mark.parametrize("model", real_models.MODELS, ids=lambda m: m.name)
def test_the_template_optimizes_and_evaluates(model: real_models.RealModel, tmp_path: Path):
    model = _cached(model)
    calib, held_out = real_models.make_data(model, real_models.CACHE / "data")
    recipe, out, report = tmp_path / "r.json", tmp_path / "o.onnx", tmp_path / "report.json"
    made = _slimscope("recipe", str(model.file), "-o", str(recipe), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    done = _slimscope("optimize", str(model.file), "--recipe", str(recipe), "-o", str(out), "--calib", str(calib),
                      "--eval", str(held_out), "--report", str(report), "--no-latency", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not [word for word in INTERNALS if word in done.stderr], done.stderr
    numbers = json.loads(report.read_text())
    assert numbers["samples"] > 0
    assert numbers["sqnr_db"] is not None
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])  # loads and runs
    x = np.load(held_out)["x"][:1]
    session.run(None, {session.get_inputs()[0].name: x})
