"""Open any supported model file into a `LoadedModel`.

What a file is decides how it is opened: a registry maps the detected kind (from the file's bytes,
`sniff.py`) to a loader. Kinds we refuse have loaders that raise with a sentence saying why.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from slimscope.core.errors import ModelLoadError, PickleRefusedError, SlimscopeError, one_line
from slimscope.core.loading.onnx_loader import iter_load_onnx
from slimscope.core.loading.sniff import FileKind, sniff_file
from slimscope.core.loading.torch_loader import iter_load_torch
from slimscope.core.model import LoadedModel
from slimscope.core.tasks import Task, run_sync

__all__ = ["LoadedModel", "iter_load_model", "load_model", "MODEL_FILE_SUFFIXES"]

MODEL_FILE_SUFFIXES = (".onnx", ".pt", ".pth", ".ts", ".torchscript", ".jit", ".pt2")

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".tar")

# Formats people mistake for ones we open, with what to do instead.
_OTHER_FORMATS = {
    ".tflite": "a TensorFlow Lite model; convert it to ONNX first (for example with tf2onnx)",
    ".pb": "a TensorFlow model; convert it to ONNX first (for example with tf2onnx)",
    ".h5": "a Keras model; convert it to ONNX first (for example with tf2onnx)",
    ".keras": "a Keras model; convert it to ONNX first (for example with tf2onnx)",
    ".safetensors": "a weights-only file with no architecture; export the model to ONNX first",
    ".caffemodel": "a Caffe model; convert it to ONNX first",
    ".mlmodel": "a Core ML model; Slimscope opens ONNX, TorchScript and .pt2 files",
    ".engine": "a TensorRT engine; Slimscope needs the ONNX model it was built from",
}

Loader = Callable[[Path, bool, "list[tuple[int, ...]] | None"], Task[LoadedModel]]


def _onnx(path: Path, trust: bool, shapes) -> Task[LoadedModel]:
    hint = _OTHER_FORMATS.get(path.suffix.lower())
    if hint is None:
        return (yield from iter_load_onnx(path, shapes))
    try:
        return (yield from iter_load_onnx(path, shapes))
    except ModelLoadError as exc:
        raise ModelLoadError(f"'{path.name}' looks like {hint}.") from exc


def _text(path: Path, trust: bool, shapes) -> Task[LoadedModel]:
    try:
        return (yield from iter_load_onnx(path, shapes))
    except ModelLoadError as exc:
        raise ModelLoadError(f"'{path.name}' is a text file, not a model.") from exc


def _refuse(message: str, error=ModelLoadError) -> Loader:
    def loader(path: Path, trust: bool, shapes) -> Task[LoadedModel]:
        raise error(message.format(name=path.name))
        yield  # makes this a generator like every other loader

    return loader


_LOADERS: dict[FileKind, Loader] = {
    FileKind.ONNX: _onnx,
    FileKind.TEXT: _text,
    FileKind.TORCHSCRIPT: lambda p, t, s: iter_load_torch(p, "torchscript", trust=t, input_shapes=s),
    FileKind.TORCH_EXPORT: lambda p, t, s: iter_load_torch(p, "torch.export", trust=t, input_shapes=s),
    FileKind.TORCH_CHECKPOINT: _refuse(
        "'{name}' is a pickled PyTorch checkpoint: it holds weights but no architecture, and "
        "unpickling it could run code, so Slimscope does not open it; export the model to ONNX, "
        "TorchScript (torch.jit.save) or a torch.export program (.pt2) instead.",
        PickleRefusedError,
    ),
    FileKind.PICKLE: _refuse(
        "'{name}' is a Python pickle: unpickling can run any code, and a pickle holds no model "
        "architecture Slimscope could read, so it is refused; export the model to ONNX instead.",
        PickleRefusedError,
    ),
    FileKind.ZIP: _refuse("'{name}' is a zip archive but not a PyTorch model format Slimscope knows."),
    FileKind.EMPTY: _refuse("'{name}' is empty."),
}


def iter_load_model(
    path: str | os.PathLike, *, trust: bool = False, input_shapes: list[tuple[int, ...]] | None = None
) -> Task[LoadedModel]:
    """Open a model file. Yields `Progress`; returns the `LoadedModel`. Never writes beside `path`.

    Every refusal is one line: names quoted from the file (or the file's own name) may hold line breaks or
    terminal escapes, which the message shows escaped instead of printing them."""
    try:
        return (yield from _iter_load(Path(path).expanduser(), trust, input_shapes))
    except SlimscopeError as exc:
        exc.args = tuple(one_line(a) if isinstance(a, str) else a for a in exc.args)
        raise


def _iter_load(path: Path, trust: bool, input_shapes: list[tuple[int, ...]] | None) -> Task[LoadedModel]:
    if not path.exists():
        raise ModelLoadError(f"'{path}' does not exist.")
    if path.is_dir():
        raise ModelLoadError(f"'{path}' is a folder; choose the model file inside it.")
    try:
        kind = sniff_file(path)
    except OSError as exc:
        raise ModelLoadError(f"'{path.name}' cannot be read: {exc.strerror or exc}.") from exc
    if kind == FileKind.PICKLE and path.suffix.lower() in _CHECKPOINT_SUFFIXES:
        kind = FileKind.TORCH_CHECKPOINT  # torch.save's legacy (pre-zip) format is a bare pickle
    loader = _LOADERS.get(kind, _onnx)
    return (yield from loader(path, trust, input_shapes))


def load_model(
    path: str | os.PathLike, *, trust: bool = False, input_shapes: list[tuple[int, ...]] | None = None
) -> LoadedModel:
    """`iter_load_model` run to completion."""
    return run_sync(iter_load_model(path, trust=trust, input_shapes=input_shapes))
