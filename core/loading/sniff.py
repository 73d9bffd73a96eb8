"""Tell what kind of file a path holds from its first bytes, never from executing it.

Suffixes lie (a pickle renamed `.onnx` is still a pickle), so content decides whenever it can.
ONNX is protobuf, which has no magic number: it is what a file is when nothing else matches.
"""

from __future__ import annotations

import zipfile
from enum import StrEnum
from pathlib import Path


class FileKind(StrEnum):
    EMPTY = "empty"
    ONNX = "onnx"  # protobuf, or at least nothing else we recognise
    TORCHSCRIPT = "torchscript"
    TORCH_EXPORT = "torch.export"
    TORCH_CHECKPOINT = "torch checkpoint"
    PICKLE = "pickle"
    ZIP = "zip"  # a zip archive that is no PyTorch format we know
    TEXT = "text"


_PICKLE_PROTOCOLS = (2, 3, 4, 5)
_OLD_PICKLE_STARTS = (b"(", b"c", b"}", b"]", b"I", b"S", b"V", b"N")


def sniff_file(path: Path) -> FileKind:
    with open(path, "rb") as handle:
        head = handle.read(64)
    if not head:
        return FileKind.EMPTY
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _sniff_zip(path)
    if head[0] == 0x80 and len(head) > 1 and head[1] in _PICKLE_PROTOCOLS:
        return FileKind.PICKLE
    if head[:1] in _OLD_PICKLE_STARTS and _last_byte(path) == b".":
        # Protocols 0 and 1 have no magic; they start with a MARK/GLOBAL/EMPTY_* opcode and always
        # end with STOP ('.'). A protobuf model starts with a field tag (0x08 for ir_version).
        return FileKind.PICKLE
    if _looks_like_text(head):
        return FileKind.TEXT
    return FileKind.ONNX


def _sniff_zip(path: Path) -> FileKind:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return FileKind.ZIP
    # PyTorch archives nest everything under one top folder: <name>/...
    tails = {name.split("/", 1)[1] if "/" in name else name for name in names}
    if "archive_format" in tails or any(t.startswith("models/") for t in tails):
        return FileKind.TORCH_EXPORT
    if "constants.pkl" in tails or any(t.startswith("code/") for t in tails):
        return FileKind.TORCHSCRIPT
    if "data.pkl" in tails:
        return FileKind.TORCH_CHECKPOINT
    return FileKind.ZIP


def _last_byte(path: Path) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(-1, 2)
        return handle.read(1)


def _looks_like_text(head: bytes) -> bool:
    # Old pickle protocols (0, 1) are ASCII opcodes; they count as text here and are refused as
    # "not a model" either way. A protobuf model starts with a field tag byte, rarely printable.
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\r\n\t" for ch in text)
