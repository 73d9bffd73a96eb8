"""Ask for a model's input shape when core cannot find one (a TorchScript file never records it), and
open the model again with it.

The window's opener reports an `InputShapeError` through `ModelOpener.shape_needed`; `retry_with_input_shape`
asks and re-opens with the same trust. `ask_input_shapes` is looked up at call time, so tests replace it
(as they replace `trust_prompt.ask_to_trust`) instead of driving a modal dialog.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from PySide6.QtWidgets import QInputDialog, QWidget

from slimscope.core.errors import InputShapeError

if TYPE_CHECKING:
    from slimscope.gui.main_window import MainWindow

T = TypeVar("T")
MAX_RANK = 6
DEFAULT_SHAPE_TEXT = "1,3,224,224"
_SEPARATORS = re.compile(r"[,x×\s]+")


def parse_shape_lines(text: str) -> list[tuple[int, ...]]:
    """One shape per non-empty line ("1,3,224,224"; "x" or spaces also separate); raises InputShapeError."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise InputShapeError(f"Give the input shape, e.g. {DEFAULT_SHAPE_TEXT}.")
    shapes = []
    for line in lines:
        parts = [part for part in _SEPARATORS.split(line.lower()) if part]
        try:
            dims = tuple(int(part) for part in parts)
        except ValueError:
            dims = ()
        if not dims or any(d <= 0 for d in dims):
            raise InputShapeError(
                f"'{line}' is not a shape: write positive whole sizes, e.g. {DEFAULT_SHAPE_TEXT}."
            )
        if len(dims) > MAX_RANK:
            raise InputShapeError(f"'{line}' has {len(dims)} dimensions; an input has 1 to {MAX_RANK}.")
        shapes.append(dims)
    return shapes


def format_shapes(shapes: list[tuple[int, ...]] | None) -> str:
    """The text `parse_shape_lines` reads back: one comma-separated line per input."""
    return "\n".join(",".join(str(d) for d in shape) for shape in shapes) if shapes else DEFAULT_SHAPE_TEXT


def ask_input_shapes(
    parent: QWidget | None, path: Path, reason: str, previous: list[tuple[int, ...]] | None = None
) -> list[tuple[int, ...]] | None:
    """Ask until the text is a valid shape list or the user cancels (None)."""
    label = (
        f"Slimscope needs the input shape to convert '{path.name}' to ONNX.\n{reason}\n\n"
        "Input shape, batch first (one line per input if the model has several):"
    )
    return ask_until_valid(parent, "Input shape", label, format_shapes(previous), parse_shape_lines)


def ask_until_valid(
    parent: QWidget | None, title: str, label: str, text: str, read: Callable[[str], T]
) -> T | None:
    """Ask for shape text until `read` accepts it (its InputShapeError shown above the question, the text
    kept) or the user cancels (None)."""
    problem = ""
    while True:
        shown = f"{problem}\n\n{label}" if problem else label
        text, ok = QInputDialog.getMultiLineText(parent, title, shown, text)
        if not ok:
            return None
        try:
            return read(text)
        except InputShapeError as exc:
            problem = str(exc)


def retry_with_input_shape(
    window: MainWindow, path: Path, trust: bool, previous: list[tuple[int, ...]] | None, exc: InputShapeError
) -> None:
    """Ask for a shape and open `path` again with it; cancelling leaves the open model as it is."""
    window.statusBar().clearMessage()
    shapes = ask_input_shapes(window, Path(path), str(exc), previous)
    if shapes is not None:
        window.open_model(Path(path), trust=trust, input_shapes=shapes)
