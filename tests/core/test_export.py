"""Exports are atomic, checked, carry their metadata, and never overwrite the source model."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from slimscope.core.errors import ExportError
from slimscope.core.export import export_model, write_json


@pytest.fixture
def model() -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.ones((2, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_export_writes_a_model_onnxruntime_runs_with_metadata(tmp_path, model):
    path = export_model(model, tmp_path / "out.onnx", metadata={"slimscope.recipe": '{"version": 1}'})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, {"x": np.ones((1, 2), np.float32)})[0], [[2, 2, 2]])
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["slimscope.recipe"] == '{"version": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["out.onnx"]  # no temporary file left


def test_export_refuses_the_source_model_and_its_data_files(tmp_path, model):
    source = tmp_path / "source.onnx"
    source.write_bytes(b"original bytes")
    data = tmp_path / "weights.bin"
    data.write_bytes(b"data bytes")
    link = tmp_path / "link.onnx"
    link.symlink_to(source)
    for target in (source, link, data, tmp_path / "." / "source.onnx"):
        with pytest.raises(ExportError, match="would overwrite"):
            export_model(model, target, protected=[source, data])
    assert source.read_bytes() == b"original bytes" and data.read_bytes() == b"data bytes"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, model, monkeypatch):
    target = tmp_path / "out.onnx"
    target.write_bytes(b"previous export")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(ExportError, match="the disk is full"):
        export_model(model, target)
    assert target.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx"]


def test_an_invalid_model_is_refused_and_nothing_is_written(tmp_path, model):
    model.graph.node[0].input[1] = "missing"
    with pytest.raises(ExportError, match="not valid ONNX"):
        export_model(model, tmp_path / "out.onnx")
    assert list(tmp_path.iterdir()) == []


def test_missing_folder_is_a_clear_error(tmp_path, model):
    with pytest.raises(ExportError, match="does not exist"):
        export_model(model, tmp_path / "nowhere" / "out.onnx")


def test_report_json_is_written_atomically(tmp_path):
    path = write_json({"sqnr_db": np.float32(12.5), "values": np.arange(3)}, tmp_path / "report.json")
    assert path.read_text().startswith("{") and '"sqnr_db": 12.5' in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]
