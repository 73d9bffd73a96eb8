"""External data stays inside the model's folder: traversal, absolute paths, links and truncation are refused
and the outside file is never read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.reference
import pytest
from onnx import TensorProto, numpy_helper
from refusal_support import add_weight_model, expect_refusal, float_weight

from slimscope.core.errors import ModelLoadError

# ---------------------------------------------------------------------------------------------------
# External data stays inside the model's folder

OUTSIDE_VALUE = 1234.5  # what a tensor would hold if the loader read the outside file


@pytest.fixture
def outside_file(tmp_path: Path) -> Path:
    """A file beside (not inside) the model folder, the right size for the tensor `w`."""
    path = tmp_path / "outside.bin"
    path.write_bytes(np.full(4, OUTSIDE_VALUE, dtype=np.float32).tobytes())
    return path


def external_model(small_model, location: str, **entries) -> onnx.ModelProto:
    """y = x + w with w [1, 4] float stored externally at `location` (offset/length as given)."""
    weight = float_weight()
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in {"location": location, **entries}.items():
        entry = weight.external_data.add()
        entry.key, entry.value = key, str(value)
    return add_weight_model(small_model, weight)


def test_external_data_beside_the_model_is_read(
    small_model, save_onnx, model_dir, outside_file, load_untouched, audit
):
    (model_dir / "weights.bin").write_bytes(outside_file.read_bytes())
    path = save_onnx(external_model(small_model, "weights.bin"))

    with audit() as log:
        loaded = load_untouched(path)

    assert str((model_dir / "weights.bin").resolve()) in log.opened  # the audit log sees reads
    np.testing.assert_array_equal(
        numpy_helper.to_array(loaded.model.graph.initializer[0]), [[OUTSIDE_VALUE] * 4]
    )


def _link_file(model_dir: Path, outside: Path) -> str:
    (model_dir / "weights.bin").symlink_to(outside)
    return "weights.bin"


def _link_folder(model_dir: Path, outside: Path) -> str:
    elsewhere = outside.parent / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "weights.bin").write_bytes(outside.read_bytes())
    (model_dir / "data").symlink_to(elsewhere, target_is_directory=True)
    return "data/weights.bin"


@pytest.mark.parametrize(
    ("make_location", "says"),
    [
        (lambda folder, outside: "../outside.bin", "outside the model's folder"),
        (lambda folder, outside: "sub/../../outside.bin", "outside the model's folder"),
        (lambda folder, outside: str(outside), "outside the model's folder"),
        (_link_file, "symbolic link"),
        (_link_folder, "symbolic link"),
    ],
    ids=["parent", "sub-parent", "absolute", "symlinked-file", "symlinked-folder"],
)
def test_external_data_outside_the_folder_is_refused_and_never_read(
    make_location, says, small_model, save_onnx, model_dir, outside_file, load_untouched, audit
):
    location = make_location(model_dir, outside_file)
    path = save_onnx(external_model(small_model, location))

    with audit() as log:
        expect_refusal(load_untouched, path, ModelLoadError, "'w'", says)

    outside = {
        str(outside_file.resolve()),
        str((outside_file.parent / "elsewhere" / "weights.bin").resolve()),
    }
    assert not outside & set(log.opened), log.opened


def test_missing_external_data_file(small_model, save_onnx, load_untouched):
    path = save_onnx(external_model(small_model, "weights.bin"))

    expect_refusal(load_untouched, path, ModelLoadError, "'weights.bin'", "'w'", "missing")


def test_external_data_naming_no_file(small_model, save_onnx, load_untouched):
    path = save_onnx(external_model(small_model, ""))

    expect_refusal(load_untouched, path, ModelLoadError, "'w'", "names no file")


@pytest.mark.parametrize(
    ("file_bytes", "entries", "says"),
    [
        (16, {"offset": 0, "length": 32}, "wants bytes 0..32 of 'weights.bin', which has only 16 bytes"),
        (16, {"offset": 8, "length": 16}, "wants bytes 8..24"),
        (16, {"offset": 16}, "wants bytes 16..32"),
        (8, {}, "wants bytes 0..16 of 'weights.bin', which has only 8 bytes"),
        (16, {"offset": 10**15, "length": 16}, "which has only 16 bytes"),
        (64, {"offset": 0, "length": 32}, "(16 bytes) but its external data holds 32 bytes"),
    ],
    ids=["length", "offset+length", "offset", "short-file", "huge-offset", "length-vs-dims"],
)
def test_external_data_range_past_the_file_or_disagreeing(
    file_bytes, entries, says, small_model, save_onnx, model_dir, load_untouched
):
    (model_dir / "weights.bin").write_bytes(b"\x01" * file_bytes)
    path = save_onnx(external_model(small_model, "weights.bin", **entries))

    expect_refusal(load_untouched, path, ModelLoadError, "'w'", says)


def test_external_data_with_an_unreadable_offset(small_model, save_onnx, model_dir, load_untouched):
    (model_dir / "weights.bin").write_bytes(b"\x01" * 16)
    model = external_model(small_model, "weights.bin")
    entry = model.graph.initializer[0].external_data.add()
    entry.key, entry.value = "offset", "eight"
    path = save_onnx(model)

    expect_refusal(load_untouched, path, ModelLoadError, "'w'", "unreadable external data offset")
