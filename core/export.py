"""Write an optimized model (and its report) atomically, never over the model it came from.

A model that fits in one protobuf message (2 GiB) is written as one `.onnx` file. A larger one is written as
`<name>.onnx` plus its weights in `<name>.onnx.data` beside it: protobuf cannot serialize more than 2 GiB, and
ONNX's external data is the format onnxruntime and Slimscope's loader read back. Smaller models stay one file
even when their source kept external data: one self-contained file is what people copy and share.

Every write goes to a temporary name in the destination's folder and is renamed into place, so a failure
(read-only folder, full disk, invalid model) leaves the previous file as it was and no temporary behind.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import onnx
from google.protobuf.message import EncodeError
from onnx.external_data_helper import set_external_data

from slimscope.core.errors import ExportError
from slimscope.core.loading.onnx_checks import tensor_nbytes
from slimscope.core.user_files import FileRead, deferred_interrupts, refuse_overlap, regular_destination

# The largest model written as one file: protobuf refuses to serialize a message of 2 GiB or more.
SINGLE_FILE_LIMIT = 2**31 - 1
EXTERNAL_DATA_SUFFIX = ".data"
EXTERNAL_DATA_THRESHOLD = 1024  # bytes: smaller tensors stay inside the .onnx file
_NEW_FILE_MODE = 0o644
# Temporary files beside a destination get a short fixed prefix (and tempfile's 8 random characters):
# one built from the destination's name made a legal 250-byte name fail as "File name too long".
TEMPORARY_PREFIX = ".slimscope-"

_READ_ONLY_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def export_model(
    model: onnx.ModelProto,
    target: str | os.PathLike,
    *,
    protected: Iterable[Path] = (),
    metadata: dict[str, str] | None = None,
) -> Path:
    """Check the model, embed `metadata`, and write it to `target` through a temporary file + rename.

    `protected` are the source model and its data files: writing over any of them is refused, and so is a
    destination whose external data file (`<target>.data`, used above 2 GiB) would be one of them.
    """
    path = Path(target).expanduser()
    refuse_protected(path, protected)
    written = regular_destination(path)  # a symbolic link's target is replaced, the link kept
    if written != path:
        refuse_protected(written, protected)  # its weights file would go beside the target
    path = written
    if not path.parent.is_dir():
        raise ExportError(f"The folder '{path.parent}' does not exist.")
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # the caller's model keeps its weights and metadata (the data path clears weights)
    for key, value in (metadata or {}).items():
        entry = next((p for p in copy.metadata_props if p.key == key), None) or copy.metadata_props.add()
        entry.key, entry.value = key, value
    if fits_one_file(copy):
        _check(copy)
        write_atomically(path, copy.SerializeToString())
    else:
        _write_with_external_data(copy, path)
    return path


def fits_one_file(model: onnx.ModelProto) -> bool:
    """Whether the model serializes to one protobuf message (under 2 GiB)."""
    try:
        return model.ByteSize() <= SINGLE_FILE_LIMIT
    except EncodeError:  # the upb backend cannot even measure a message over 2 GiB
        return False


def external_data_path(path: Path) -> Path:
    """Where `export_model` puts the weights of a model too large for one file: `<name>.onnx.data`."""
    return path.with_name(path.name + EXTERNAL_DATA_SUFFIX)


def save_with_external_data(model: onnx.ModelProto, path: Path) -> Path:
    """Save `model` (which loses its in-memory weights) as `path` plus `<path>.data`; returns the data path.

    Tensors are marked here rather than by `onnx.save_model(save_as_external_data=True)`, whose converter
    refuses to run when a file of the data file's name exists in the *current* folder.
    """
    data_path = external_data_path(path)
    for tensor in _initializers(model.graph):
        if tensor.HasField("raw_data") and tensor_nbytes(tensor) >= EXTERNAL_DATA_THRESHOLD:
            set_external_data(tensor, data_path.name)  # relative: the pair can move together
    onnx.save_model(model, path)  # writes the marked tensors to data_path, then the model
    return data_path


def write_json(data: dict, target: str | os.PathLike) -> Path:
    """A report or recipe as indented JSON, written atomically."""
    path = Path(target).expanduser()
    write_atomically(path, (json.dumps(data, indent=2, allow_nan=True, default=_plain) + "\n").encode())
    return path


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, flush it to disk, and rename it over `path` (the
    target of a symbolic link to a regular file; other kinds of files are refused). Ctrl-C waits for the
    rename: the previous file or the whole new one, never a temporary, is what remains."""
    path = regular_destination(path)
    with deferred_interrupts():
        _write_atomically(path, data)


def _write_atomically(path: Path, data: bytes) -> None:
    temp_name = None
    try:
        mode = _mode_for(path)
        with tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=TEMPORARY_PREFIX, suffix=".part", delete=False
        ) as temp:
            temp_name = temp.name
            temp.write(data)
            temp.flush()
            os.fsync(temp.fileno())
        os.chmod(temp_name, mode)
        os.replace(temp_name, path)
        temp_name = None
    except OSError as exc:
        raise ExportError(cannot_write_message(path, exc)) from exc
    finally:
        if temp_name is not None and os.path.exists(temp_name):
            os.unlink(temp_name)


def cannot_write_message(path: Path, exc: OSError) -> str:
    """One sentence for a failed write, naming the two causes people can fix themselves."""
    if exc.errno in _READ_ONLY_ERRNOS:
        return f"Cannot write '{path}': the folder is read-only."
    if exc.errno in _FULL_ERRNOS:
        return f"Cannot write '{path}': the disk is full."
    return f"Cannot write '{path}': {exc.strerror or exc}."


def refuse_protected(path: Path, protected: Iterable[Path]) -> None:
    """Raise ExportError when `path`, or the external data file it would get, is (a link to) one of
    `protected` (core/user_files.py checks a command's destinations against everything it reads)."""
    protected = [Path(source) for source in protected]
    refuse_overlap(Path(path), [FileRead(p, "the model being optimized, its data, or the exported model")
                                for p in protected])  # fmt: skip
    refuse_overlap(external_data_path(Path(path)),
                   [FileRead(p, "the model being optimized or its data") for p in protected],
                   weights_of=Path(path))  # fmt: skip


def _write_with_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Write `path` + `<path>.data` as a pair: both are made in a private temporary folder inside the
    destination folder (the model records its data file's final name, so the two must sit side by side
    under their final names to be checked), then renamed into place, data first, then the model.

    Should the model's rename fail, the previous data file comes back, so the previous pair still agrees.
    """
    data_path = external_data_path(path)
    regular_destination(data_path)  # refuses a device, pipe or folder of that name
    folder = None
    try:
        folder = Path(tempfile.mkdtemp(dir=path.parent, prefix=TEMPORARY_PREFIX, suffix=".part"))
        temp_model = folder / path.name
        temp_data = save_with_external_data(model, temp_model)
        for written, final in ((temp_data, data_path), (temp_model, path)):
            _fsync(written)
            os.chmod(written, _mode_for(final))
        _check(str(temp_model))
        with deferred_interrupts():  # Ctrl-C waits from the first rename until the temporaries are gone
            try:
                _replace_pair(folder, (temp_data, data_path), (temp_model, path))
            finally:
                shutil.rmtree(folder, ignore_errors=True)
    except OSError as exc:
        raise ExportError(cannot_write_message(path, exc)) from exc
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _replace_pair(folder: Path, data: tuple[Path, Path], model: tuple[Path, Path]) -> None:
    (temp_data, data_path), (temp_model, path) = data, model
    backup = None
    if os.path.lexists(data_path):
        backup = folder / "previous.data"
        try:
            os.link(data_path, backup, follow_symlinks=False)  # the old data stays in place meanwhile
        except OSError:  # no hard links here (FAT, some network shares): move it aside instead
            os.replace(data_path, backup)
    os.replace(temp_data, data_path)
    try:
        os.replace(temp_model, path)
    except OSError:
        if backup is not None:
            os.replace(backup, data_path)
        else:
            os.unlink(data_path)
        raise


def _check(model: onnx.ModelProto | str) -> None:
    """onnx's checker (given a path for models with external data); a failure writes nothing."""
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid"
        raise ExportError(f"The optimized model is not valid ONNX ({first}); nothing was written.") from exc


def _initializers(graph: onnx.GraphProto):
    """The initializers of a graph and of its subgraphs (the tensors onnx moves to external data)."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _initializers(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    yield from _initializers(subgraph)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mode_for(path: Path) -> int:
    """An overwritten file keeps its permissions; a new one is readable by all."""
    return path.stat().st_mode & 0o777 if path.exists() else _NEW_FILE_MODE


def _plain(value):
    """JSON for numpy scalars and arrays inside reports."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
