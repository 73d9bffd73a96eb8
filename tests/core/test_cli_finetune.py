"""`slimscope finetune`: retrains headless, writes a model onnxruntime runs, and refuses bad input with
one line and exit code 2."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest

from slimscope.core.cli import main
from slimscope.core.layers import find_layers
from slimscope.core.loading import load_model
from slimscope.resources import DEMO_DATA, DEMO_MODEL, DEMO_TRAINING


def write_recipe(path, **training):
    keep_thin = {
        layer.name: {"prune": None}
        for layer in find_layers(load_model(DEMO_MODEL).model, {})
        if layer.depthwise or "stem" in layer.name
    }
    quick = {
        "steps": 1,
        "final_epochs": 1,
        "max_batches_per_epoch": 4,
        "batch_size": 32,
        "val_fraction": 0.05,
    }
    recipe = {"version": 1, "defaults": {"prune": {"sparsity": 0.5, "scope": "global"}, "quantize": None},
              "layers": keep_thin, "training": quick | training}  # fmt: skip
    path.write_text(json.dumps(recipe))
    return path


@pytest.mark.slow  # over 10 s: CI's second stage
def test_finetune_writes_a_model_that_runs(tmp_path, capsys):
    model = tmp_path / "net.onnx"
    shutil.copy(DEMO_MODEL, model)
    recipe = write_recipe(tmp_path / "r.json")
    out = tmp_path / "out dir" / "retrained #1.onnx"
    out.parent.mkdir()
    code = main(["finetune", str(model), "--recipe", str(recipe), "--train", str(DEMO_TRAINING), "-o", str(out),
                 "--checkpoints", str(tmp_path / "ckpt")])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "post-training" in printed and "retrained" in printed
    x = np.load(DEMO_DATA)["x"][:8]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert session.run(None, {"input": x})[0].shape == (8, 10)
    assert len(list((tmp_path / "ckpt").glob("slimscope-finetune-*.pt"))) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "net.onnx", "out dir", "r.json"]


def test_finetune_refuses_bad_input_with_one_line(tmp_path, capsys):
    recipe = write_recipe(tmp_path / "r.json")
    unlabelled = tmp_path / "unlabelled.npz"
    np.savez(unlabelled, x=np.zeros((4, 1, 28, 28), np.float32))
    cases = [
        (["--train", str(DEMO_TRAINING), "-o", str(tmp_path / "o.onnx"), "--resume"], "--checkpoints"),
        (["--train", str(unlabelled), "-o", str(tmp_path / "o.onnx")], "label"),
        (["--train", str(DEMO_TRAINING), "-o", str(DEMO_MODEL)], "digits_net.onnx"),
    ]
    for extra, expected in cases:
        code = main(["finetune", str(DEMO_MODEL), "--recipe", str(recipe), *extra])
        err = capsys.readouterr().err
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
