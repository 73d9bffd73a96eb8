"""TorchScript and torch.export (.pt2) files: refused without trust (and then nothing in them runs),
converted to ONNX in a child process with trust, computing what the torch module computes; shape
problems and broken files are clear errors, and the temporary conversion folder is always removed.

Conversions take seconds each (a child process imports torch), so the files and the converted models
are shared by the whole module."""

from __future__ import annotations

import pathlib
import pickle
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from slimscope.core.errors import ConversionError, InputShapeError, ModelLoadError, UntrustedModelError
from slimscope.core.loading import load_model, torch_loader
from slimscope.core.model import LoadedModel


class SmallNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class Touch:
    """Unpickling this creates the marker file: the stand-in for any code a file can run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


INPUT_SHAPE = (1, 3, 8, 8)


@pytest.fixture(scope="module")
def net() -> SmallNet:
    torch.manual_seed(0)
    return SmallNet().eval()


@pytest.fixture(scope="module")
def torch_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("torch-models")


@pytest.fixture(scope="module")
def traced_path(net, torch_dir) -> Path:
    path = torch_dir / "traced.pt"
    torch.jit.save(torch.jit.trace(net, torch.zeros(INPUT_SHAPE)), path)
    return path


@pytest.fixture(scope="module")
def program_path(net, torch_dir) -> Path:
    path = torch_dir / "net.pt2"
    torch.export.save(torch.export.export(net, (torch.zeros(INPUT_SHAPE),)), path)
    return path


def _rewrite_zip(source: Path, target: Path, replace: dict[str, bytes]) -> None:
    """Copy a zip archive, replacing the members whose names end with a key of `replace`."""
    used = set()
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as copy:
        for info in original.infolist():
            data = original.read(info)
            for tail, new in replace.items():
                if info.filename.endswith(tail):
                    data = new
                    used.add(tail)
            copy.writestr(info.filename, data)
    assert used == set(replace), f"no member ends with {set(replace) - used}"


@pytest.fixture(scope="module")
def marker(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("markers") / "pt2-payload-ran"


@pytest.fixture(scope="module")
def hostile_program_path(program_path, torch_dir, marker) -> Path:
    """A .pt2 whose sample inputs are a pickle that creates `marker` when torch.export.load reads it."""
    path = torch_dir / "hostile.pt2"
    _rewrite_zip(
        program_path, path, {"/data/sample_inputs/model.pt": pickle.dumps(Touch(marker), protocol=2)}
    )
    return path


@pytest.fixture(scope="module")
def private_tempdir(tmp_path_factory) -> Path:
    """tempfile.gettempdir() for this module: conversion folders land here, away from other tests."""
    folder = tmp_path_factory.mktemp("tempdir")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tempfile, "tempdir", str(folder))
        yield folder


@pytest.fixture(scope="module")
def work_folders() -> list[Path]:
    """Every temporary conversion folder created in this module."""
    return []


@pytest.fixture(scope="module")
def convert(private_tempdir, work_folders, folder_untouched):
    """`load_model`, checking that nothing is written beside the file and no conversion folder is left,
    also when it raises; a hang would be stopped after 2 minutes instead of 30."""

    def load(path: Path, **kwargs) -> LoadedModel:
        real_mkdtemp = tempfile.mkdtemp

        def recording_mkdtemp(*args, **kw):
            folder = real_mkdtemp(*args, **kw)
            work_folders.append(Path(folder))
            return folder

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(tempfile, "mkdtemp", recording_mkdtemp)
            patch.setattr(torch_loader, "CONVERSION_TIMEOUT_S", 120)
            try:
                with folder_untouched(path.parent):
                    return load_model(path, **kwargs)
            finally:
                assert not list(private_tempdir.glob("slimscope-convert-*"))

    return load


@pytest.fixture(scope="module")
def traced_loaded(convert, traced_path) -> LoadedModel:
    return convert(traced_path, trust=True, input_shapes=[INPUT_SHAPE])


@pytest.fixture(scope="module")
def program_loaded(convert, program_path) -> LoadedModel:
    return convert(program_path, trust=True)


def _assert_computes_like(loaded: LoadedModel, net: SmallNet, run_onnx, batch: int = 1) -> None:
    x = np.random.default_rng(5).standard_normal((batch, *INPUT_SHAPE[1:])).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    (input_name,) = loaded.input_shapes
    (got,) = run_onnx(loaded.model, {input_name: x})
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


def _conv_weight(loaded: LoadedModel, weights_of) -> np.ndarray:
    (weight,) = [w for w in weights_of(loaded.model).values() if w.shape == (4, 3, 3, 3)]
    return weight


# ---------------------------------------------------------------------------------------------------
# Without trust: refused, and nothing in the file runs


@pytest.mark.parametrize(
    ("fixture", "kind"),
    [
        ("traced_path", "TorchScript file"),
        ("program_path", "torch.export program"),
        ("hostile_program_path", "torch.export program"),
    ],
)
def test_untrusted_files_are_refused_and_never_opened(
    fixture, kind, request, marker, monkeypatch, folder_untouched, audit
):
    path: Path = request.getfixturevalue(fixture)
    opened = []

    def refuse(*args, **kwargs):
        opened.append(args)
        raise AssertionError("an untrusted PyTorch file was opened")

    monkeypatch.setattr(torch.jit, "load", refuse)
    monkeypatch.setattr(torch.export, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)

    with audit() as log, folder_untouched(path.parent), pytest.raises(UntrustedModelError) as caught:
        load_model(path)

    message = str(caught.value)
    assert f"'{path.name}' is a {kind}" in message and "--trust" in message
    assert opened == []
    assert log.processes == []  # no conversion child was started
    assert log.unpickled == []
    assert not marker.exists()


def test_the_hostile_program_s_payload_is_live(convert, hostile_program_path, marker, audit):
    """With trust the child process opens the file and the payload runs: the fixture above is real.
    (The broken sample inputs then make torch.export.load fail.)"""
    assert not marker.exists()

    unreadable = "'hostile.pt2' cannot be read as a torch.export program"
    with audit() as log, pytest.raises(ConversionError, match=unreadable):
        convert(hostile_program_path, trust=True)

    assert marker.exists()
    assert log.processes  # the audit log sees the conversion child, so its silence above means something


# ---------------------------------------------------------------------------------------------------
# TorchScript with trust


def test_torchscript_without_an_input_shape_asks_for_one(convert, traced_path):
    with pytest.raises(InputShapeError) as caught:
        convert(traced_path, trust=True)

    assert "'traced.pt'" in str(caught.value)
    assert "--input-shape" in str(caught.value)


def test_torchscript_converts_and_computes_like_the_torch_module(
    traced_loaded, traced_path, net, run_onnx, weights_of
):
    loaded = traced_loaded

    assert loaded.format == "torchscript"
    assert loaded.source == traced_path
    assert loaded.file_size == traced_path.stat().st_size
    assert "Converted from a TorchScript file" in loaded.notes[0]
    assert loaded.input_shapes == {"input": INPUT_SHAPE}
    assert "Conv" in [n.op_type for n in loaded.model.graph.node]
    np.testing.assert_array_equal(_conv_weight(loaded, weights_of), net.conv.weight.detach().numpy())
    _assert_computes_like(loaded, net, run_onnx)


@pytest.mark.parametrize(
    ("shape", "detail"),
    [((1, 5, 8, 8), "1x5x8x8"), ((1, 3, 9, 9), "1x3x9x9")],
    ids=["channels", "spatial"],
)
def test_torchscript_with_a_wrong_input_shape(shape, detail, convert, traced_path):
    started = time.monotonic()
    with pytest.raises(InputShapeError) as caught:
        convert(traced_path, trust=True, input_shapes=[shape])

    message = str(caught.value)
    assert f"'traced.pt' does not run on an input of shape {detail}" in message
    assert "\n" not in message
    assert time.monotonic() - started < 60


def test_a_corrupted_torchscript_file_is_a_conversion_error(convert, traced_path, torch_dir):
    broken = torch_dir / "broken.pt"
    _rewrite_zip(traced_path, broken, {"/data.pkl": b"\x80\x02this is not the pickle it should be"})
    started = time.monotonic()

    with pytest.raises(ConversionError) as caught:
        convert(broken, trust=True, input_shapes=[INPUT_SHAPE])

    message = str(caught.value)
    assert "'broken.pt' to ONNX failed" in message
    assert "\n" not in message and "Traceback" not in message
    assert "took longer" not in message and time.monotonic() - started < 60


def test_a_truncated_torchscript_zip_is_refused_without_converting(
    traced_path, torch_dir, folder_untouched, audit
):
    cut = torch_dir / "cut.pt"
    whole = traced_path.read_bytes()
    cut.write_bytes(whole[: len(whole) // 2])  # the zip's directory at the end is gone

    with audit() as log, folder_untouched(torch_dir), pytest.raises(ModelLoadError, match="'cut.pt'"):
        load_model(cut, trust=True)

    assert log.processes == []


# ---------------------------------------------------------------------------------------------------
# torch.export programs with trust


def test_program_converts_with_its_stored_shapes_and_computes_like_torch(
    program_loaded, program_path, net, run_onnx, weights_of
):
    loaded = program_loaded

    assert loaded.format == "torch.export"
    assert loaded.source == program_path
    assert "Converted from a torch.export program" in loaded.notes[0]
    assert list(loaded.input_shapes.values()) == [INPUT_SHAPE]
    assert "Conv" in [n.op_type for n in loaded.model.graph.node]
    for tensor in loaded.model.graph.initializer:  # the exporter's external data was read in
        assert tensor.data_location == tensor.DEFAULT
    np.testing.assert_array_equal(_conv_weight(loaded, weights_of), net.conv.weight.detach().numpy())
    _assert_computes_like(loaded, net, run_onnx)


def test_program_with_an_input_shape_it_cannot_run_on(convert, program_path):
    with pytest.raises(InputShapeError, match="1x3x9x9"):
        convert(program_path, trust=True, input_shapes=[(1, 3, 9, 9)])


# ---------------------------------------------------------------------------------------------------
# The temporary conversion folder


def test_conversion_folders_are_removed(traced_loaded, program_loaded, work_folders, private_tempdir):
    assert len(work_folders) >= 2  # one per conversion in this module so far
    for folder in work_folders:
        assert folder.parent == private_tempdir
        assert folder.name.startswith("slimscope-convert-")
        assert not folder.exists()
    assert list(private_tempdir.iterdir()) == []
