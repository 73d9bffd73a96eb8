"""Files that are no model, damaged ones, and pickles: refused with one sentence, never unpickled,
never written beside."""

from __future__ import annotations

import pathlib
import pickle
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnx.reference
import pytest
from refusal_support import add_weight_model, expect_refusal, float_weight

from slimscope.core.errors import ModelLoadError, PickleRefusedError

# ---------------------------------------------------------------------------------------------------
# Files that are no model, or a damaged one


def test_empty_file(model_dir, load_untouched):
    path = model_dir / "empty.onnx"
    path.write_bytes(b"")

    expect_refusal(load_untouched, path, ModelLoadError, "'empty.onnx' is empty")


def _truncation_points(size: int) -> list[int]:
    return [1, 10, size // 4, size // 2, size - 100, size - 3, size - 1]


@pytest.mark.parametrize("point", range(7), ids=["1", "10", "quarter", "half", "len-100", "len-3", "len-1"])
def test_truncated_onnx(point, conv_net, save_onnx, load_untouched):
    whole = save_onnx(conv_net.model, "whole.onnx").read_bytes()
    cut = _truncation_points(len(whole))[point]
    path = save_onnx(conv_net.model, "cut.onnx")
    path.write_bytes(whole[:cut])

    message = expect_refusal(load_untouched, path, ModelLoadError)
    assert "cut.onnx" in message or "truncated" in message or "damaged" in message, message


def test_every_truncation_of_a_small_model_is_refused(small_model, save_onnx, load_untouched):
    model = add_weight_model(small_model, float_weight())
    whole = model.SerializeToString()
    path = save_onnx(model, "cut.onnx")
    load_untouched(path)  # the whole file loads

    for cut in range(1, len(whole)):
        path.write_bytes(whole[:cut])
        with pytest.raises(ModelLoadError):
            load_untouched(path)
            pytest.fail(f"the first {cut} of {len(whole)} bytes loaded as a model")


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes(seed, model_dir, load_untouched):
    path = model_dir / "noise.onnx"
    path.write_bytes(np.random.default_rng(seed).bytes(2000))

    expect_refusal(load_untouched, path, ModelLoadError)


@pytest.mark.parametrize("name", ["notes.onnx", "README.txt", "model.pt"])
def test_text_file(name, model_dir, load_untouched):
    path = model_dir / name
    path.write_text("This is not a model.\nIt is some notes about one.\n")

    expect_refusal(load_untouched, path, ModelLoadError, f"'{name}'", "text file")


def test_a_model_without_a_graph(model_dir, load_untouched):
    path = model_dir / "nograph.onnx"
    path.write_bytes(onnx.ModelProto(ir_version=8).SerializeToString())

    expect_refusal(load_untouched, path, ModelLoadError, "'nograph.onnx' holds no model graph")


def test_a_zip_archive_that_is_no_pytorch_file(model_dir, load_untouched):
    path = model_dir / "bundle.onnx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")

    expect_refusal(load_untouched, path, ModelLoadError, "'bundle.onnx' is a zip archive")


def test_another_framework_s_file_says_what_it_is(model_dir, load_untouched):
    path = model_dir / "model.tflite"
    path.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(range(200)))

    expect_refusal(load_untouched, path, ModelLoadError, "'model.tflite'", "TensorFlow Lite")


def test_a_directory(model_dir, load_untouched):
    expect_refusal(load_untouched, model_dir, ModelLoadError, str(model_dir), "folder")


def test_a_missing_path(model_dir, load_untouched):
    expect_refusal(load_untouched, model_dir / "nope.onnx", ModelLoadError, "nope.onnx", "does not exist")


# ---------------------------------------------------------------------------------------------------
# Pickles are never unpickled


class Touch:
    """Unpickling this creates the marker file: the stand-in for any code a pickle can run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    folder = tmp_path / "markers"
    folder.mkdir()
    return folder / "pickle-ran"


def test_the_pickle_payload_is_live(marker, audit):
    with audit() as log:
        pickle.loads(pickle.dumps(Touch(marker), protocol=0))  # what the loader must never do

    assert marker.exists()
    assert log.unpickled  # the audit log sees unpickling, so its silence below means something


@pytest.mark.parametrize(
    ("name", "protocol", "says"),
    [
        ("evil.pkl", 5, "Python pickle"),
        ("evil.pkl", 0, "Python pickle"),
        ("evil.pth", 2, "checkpoint"),
        ("evil.pth", 0, "checkpoint"),
        ("evil.onnx", 4, "Python pickle"),
        ("evil.onnx", 1, "Python pickle"),
        ("evil.onnx", 0, "Python pickle"),
        ("evil.pt2", 2, "Python pickle"),
    ],
)
def test_a_pickle_is_refused_and_never_run(name, protocol, says, marker, model_dir, load_untouched, audit):
    path = model_dir / name
    path.write_bytes(pickle.dumps(Touch(marker), protocol=protocol))

    with audit() as log:
        expect_refusal(load_untouched, path, PickleRefusedError, f"'{name}'", says)

    assert not marker.exists()
    assert log.unpickled == []
    assert log.processes == []


def test_a_torch_checkpoint_is_refused(model_dir, load_untouched, audit):
    import torch

    state = torch.nn.Conv2d(3, 4, 3).state_dict()
    zipped, legacy, renamed = model_dir / "weights.pt", model_dir / "legacy.pth", model_dir / "weights.onnx"
    torch.save(state, zipped)
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    torch.save(state, renamed)
    assert zipfile.is_zipfile(zipped) and not zipfile.is_zipfile(legacy)

    with audit() as log:
        for path in (zipped, legacy, renamed):
            expect_refusal(load_untouched, path, PickleRefusedError, f"'{path.name}'", "checkpoint")

    assert log.unpickled == []
