"""Write an optimized model (and its report) atomically, never over the model it came from."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import onnx

from slimscope.core.errors import ExportError

_PROTOBUF_LIMIT = 2**31 - 1


def export_model(
    model: onnx.ModelProto,
    target: str | os.PathLike,
    *,
    protected: Iterable[Path] = (),
    metadata: dict[str, str] | None = None,
) -> Path:
    """Check the model, embed `metadata`, and write it to `target` through a temporary file + rename.

    `protected` are the source model and its data files: writing over any of them is refused.
    """
    path = Path(target).expanduser()
    refuse_protected(path, protected)
    if not path.parent.is_dir():
        raise ExportError(f"The folder '{path.parent}' does not exist.")
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for key, value in (metadata or {}).items():
        entry = next((p for p in copy.metadata_props if p.key == key), None) or copy.metadata_props.add()
        entry.key, entry.value = key, value
    if copy.ByteSize() > _PROTOBUF_LIMIT:
        raise ExportError(
            "The optimized model is larger than 2 GiB; exporting external data is not supported yet."
        )
    try:
        onnx.checker.check_model(copy)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid"
        raise ExportError(f"The optimized model is not valid ONNX ({first}); nothing was written.") from exc
    write_atomically(path, copy.SerializeToString())
    return path


def write_json(data: dict, target: str | os.PathLike) -> Path:
    """A report or recipe as indented JSON, written atomically."""
    path = Path(target).expanduser()
    write_atomically(path, (json.dumps(data, indent=2, allow_nan=True, default=_plain) + "\n").encode())
    return path


def write_atomically(path: Path, data: bytes) -> None:
    temp_name = None
    try:
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        with tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=f".{path.name}.", suffix=".part", delete=False
        ) as temp:
            temp_name = temp.name
            temp.write(data)
            temp.flush()
            os.fsync(temp.fileno())
        os.chmod(temp_name, mode)
        os.replace(temp_name, path)
        temp_name = None
    except OSError as exc:
        raise ExportError(f"Cannot write '{path}': {exc.strerror or exc}.") from exc
    finally:
        if temp_name is not None and os.path.exists(temp_name):
            os.unlink(temp_name)


def refuse_protected(path: Path, protected: Iterable[Path]) -> None:
    """Raise ExportError when `path` is (a link to) one of `protected`."""
    real = os.path.realpath(path)
    for source in protected:
        same = os.path.realpath(source) == real
        if not same and path.exists() and Path(source).exists():
            same = os.path.samefile(path, source)
        if same:
            raise ExportError(
                f"'{path}' would overwrite '{source}', which this command reads (the model being optimized, "
                "its data, or the exported model); choose another file name."
            )


def _plain(value):
    """JSON for numpy scalars and arrays inside reports."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
