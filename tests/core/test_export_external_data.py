"""Models over protobuf's 2 GiB are written as `<name>.onnx` plus `<name>.onnx.data`, as a pair that
replaces the previous pair whole or not at all, and read back through Slimscope's loader and onnxruntime.

Most tests lower `export.SINGLE_FILE_LIMIT` to take the large-model path on a 4 KiB model; one writes a real
2.2 GB model (marked slow).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from slimscope.core import export
from slimscope.core.errors import ExportError
from slimscope.core.export import export_model, external_data_path
from slimscope.core.loading import load_model
from slimscope.resources import DEMO_MODEL


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_model_under_the_limit_stays_one_file_even_if_its_source_had_external_data(tmp_path, conv_net):
    source = tmp_path / "source.onnx"
    onnx.save_model(
        conv_net.model, source, save_as_external_data=True, location="source.onnx.data", size_threshold=0
    )
    loaded = load_model(source)
    export_model(loaded.model, tmp_path / "out.onnx", protected=[source, *loaded.external_files])
    assert not external_data_path(tmp_path / "out.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx", "source.onnx", "source.onnx.data"]


def test_over_the_limit_the_weights_go_beside_the_model_and_reload(tmp_path, conv_net, monkeypatch, run_onnx):
    monkeypatch.setattr(export, "SINGLE_FILE_LIMIT", 1000)
    output = tmp_path / "net.onnx"
    output.write_bytes(b"previous export")
    external_data_path(output).write_bytes(b"previous weights")
    export_model(conv_net.model, output, metadata={"slimscope.recipe": "{}"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx", "net.onnx.data"]  # no temporaries
    stored = onnx.load(output, load_external_data=False)
    locations = {e.value for t in stored.graph.initializer for e in t.external_data if e.key == "location"}
    assert locations == {"net.onnx.data"}  # relative: the pair can be moved together
    assert {p.key: p.value for p in stored.metadata_props} == {"slimscope.recipe": "{}"}
    external = [t.name for t in stored.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external == ["fc.weight"]  # 5 KiB; tensors under 1 KiB (conv.weight: 432 bytes) stay inside
    x = np.ones((2, 3, 8, 8), np.float32)
    np.testing.assert_array_equal(
        run_onnx(load_model(output).model, {"input": x})[0], run_onnx(conv_net.model, {"input": x})[0]
    )
    assert conv_net.model.graph.initializer[0].HasField("raw_data")  # the caller's model kept its weights


@pytest.mark.slow
def test_a_model_over_2_gib_is_written_with_external_data_and_reloads(tmp_path):
    """One Gemm with a 2.2 GB float32 weight: w[k, n] = k + 1 + n % 7, so y = x @ w is known exactly."""
    rows, columns = 64, 8_593_750  # 64 × 8,593,750 × 4 bytes = 2.2e9 > 2^31 − 1
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Gemm", ["x", "w"], ["y"])],
        "big",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, rows])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, columns])],
    )
    weight = graph.initializer.add()  # filled in place: no copy of the graph's 2.2 GB
    weight.name, weight.data_type = "w", onnx.TensorProto.FLOAT
    weight.dims.extend([rows, columns])
    pattern = (np.arange(columns) % 7).astype(np.float32)
    weight.raw_data = np.add.outer(np.arange(1, rows + 1, dtype=np.float32), pattern).tobytes()
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8)
    del graph, weight
    output = tmp_path / "big model.onnx"
    export_model(model, output, metadata={"slimscope.recipe": "{}"})
    del model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big model.onnx", "big model.onnx.data"]
    assert output.stat().st_size < 1 << 20 and external_data_path(output).stat().st_size == rows * columns * 4

    loaded = load_model(output)
    assert loaded.external_files == [external_data_path(output)]
    assert [tuple(t.dims) for t in loaded.model.graph.initializer] == [(rows, columns)]
    del loaded
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    y = session.run(None, {"x": np.ones((1, rows), np.float32)})[0]
    np.testing.assert_array_equal(y[0], rows * (rows + 1) / 2 + rows * (np.arange(columns) % 7))


def test_a_failed_rename_of_the_model_puts_the_previous_data_back(conv_net, tmp_path, monkeypatch, run_onnx):
    """Data is renamed first: should the model's rename then fail, the previous model must find its own
    weights again, not the new ones."""
    monkeypatch.setattr(export, "SINGLE_FILE_LIMIT", 1000)
    output = tmp_path / "net.onnx"
    export_model(conv_net.model, output)
    before = {p.name: sha256(p) for p in tmp_path.iterdir()}
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst) == output:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(ExportError, match=f"Cannot write '{re.escape(str(output))}': Input/output error."):
        export_model(onnx.load(DEMO_MODEL), output)
    assert {p.name: sha256(p) for p in tmp_path.iterdir()} == before
    x = np.ones((1, 3, 8, 8), np.float32)
    np.testing.assert_allclose(run_onnx(output, {"input": x})[0], run_onnx(conv_net.model, {"input": x})[0])
