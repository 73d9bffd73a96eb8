"""`LoadedModel`: the one in-memory ONNX model every later stage works on, and where it came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnx


@dataclass
class LoadedModel:
    """An ONNX model with all weights in memory, normalized for the rest of Slimscope.

    `notes` says, one sentence each, what loading changed (opset upgrade, folded constants, ...), so
    the user is never surprised that the model they see differs from the bytes in their file.
    """

    model: onnx.ModelProto
    source: Path
    format: str  # "onnx", "torchscript" or "torch.export"
    file_size: int  # bytes on disk, external data files included
    input_shapes: dict[str, tuple[int | str, ...]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    external_files: list[Path] = field(default_factory=list)  # data files beside the model it read

    @property
    def opset(self) -> int:
        """The default-domain (ai.onnx) opset version."""
        return default_opset(self.model)


def default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return 0
