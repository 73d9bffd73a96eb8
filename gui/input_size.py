"""Data → Input Size…: the size at which MACs are counted for a model that leaves its input size open.

A model with free dimensions (a detector or OCR network that takes any image size) has no MACs until a
size is known. The size comes, in this order, from the user (this dialog; remembered per model file in
the settings), or from one sample of the evaluation data once a comparison has run on it. Only the layer
table's and the Model tab's numbers change: the model itself keeps its free dimensions, and comparisons
always run at the data's own size.

`ask_input_size` is looked up at call time, so tests replace it instead of driving a modal dialog.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtWidgets import QWidget

from slimscope.core.comparison import Comparison
from slimscope.core.errors import InputShapeError
from slimscope.core.inspection import with_input_shapes
from slimscope.core.inspection_table import human_count
from slimscope.core.loading.input_shapes import (
    Shape,
    guess_input_shapes,
    leaves_size_open,
    merge_input_shapes,
    shapes_for_data,
)
from slimscope.gui import settings
from slimscope.gui.input_shape_prompt import ask_until_valid, format_shapes, parse_shape_lines

if TYPE_CHECKING:
    from slimscope.gui.main_window import MainWindow

Shapes = dict[str, tuple[int, ...]]


def read_input_size(text: str, declared: dict[str, Shape]) -> Shapes:
    """The shapes typed (one line per input) checked against the model's fixed sizes; empty text: {}
    (count at the data's size again). Raises InputShapeError with a sentence saying what is wrong."""
    if not text.strip():
        return {}
    merged = merge_input_shapes(declared, parse_shape_lines(text))
    return {name: tuple(int(d) for d in dims) for name, dims in merged.items()}


def ask_input_size(
    parent: QWidget | None, model_name: str, declared: dict[str, Shape], guess: Shapes
) -> Shapes | None:
    """Ask until the text fits the model or the user cancels (None); {} when the user cleared it."""
    inputs = ", ".join(f"{name} {'×'.join(str(d) for d in dims)}" for name, dims in declared.items())
    label = (
        f"'{model_name}' leaves its input size open ({inputs}).\n"
        "MACs are counted at the size given here; the model keeps its free sizes, and comparisons run at "
        "the evaluation data's own size.\n\n"
        "Input shape, batch first (one line per input; leave empty to count at the data's size):"
    )
    text = format_shapes(list(guess.values()))
    return ask_until_valid(parent, "Input size", label, text, lambda typed: read_input_size(typed, declared))


def choose_input_size(window: MainWindow) -> None:
    """Data → Input Size…: ask (prefilled with the size in use, else the data's, else a guess), remember
    the answer for this model file and count every layer's MACs at it."""
    report, path = window.session.report, window.model_path
    if report is None or path is None or not leaves_size_open(report.loaded.input_shapes):
        return
    declared = report.loaded.input_shapes
    guess = report.shape_used or guess_input_shapes(declared, _data_sample_shape(window.session.result))
    shapes = ask_input_size(window, path.name, declared, guess)
    if shapes is None:
        return
    settings.set_input_size(path, list(shapes.values()) or None)
    # Cleared: back to the data's size, or to no size at all ("?") before any comparison.
    _count_macs_at(window, shapes or shapes_for_data(declared, _data_sample_shape(window.session.result)))


def restore_input_size(window: MainWindow) -> None:
    """A model just opened: count its MACs at the size the user gave it before, if it leaves it open."""
    report, path = window.session.report, window.model_path
    if report is None or path is None or not leaves_size_open(report.loaded.input_shapes):
        return
    saved = settings.input_size(path)
    try:
        shapes = read_input_size(format_shapes(saved), report.loaded.input_shapes) if saved else {}
    except InputShapeError:  # the file changed since: the saved size no longer fits it
        settings.set_input_size(path, None)
        return
    if shapes:
        _count_macs_at(window, shapes)


def follow_data(window: MainWindow, result: Comparison | None) -> None:
    """A comparison ran: without a size from the user, count MACs at one sample of its evaluation data."""
    report, path = window.session.report, window.model_path
    if report is None or path is None or not leaves_size_open(report.loaded.input_shapes):
        return
    if settings.input_size(path) is not None:
        return
    shapes = shapes_for_data(report.loaded.input_shapes, _data_sample_shape(result))
    if shapes and shapes != report.shape_used:
        _count_macs_at(window, shapes)


def _data_sample_shape(result: Comparison | None) -> tuple[int, ...] | None:
    if result is None or len(result.input_shapes) != 1:
        return None
    return next(iter(result.input_shapes.values()))[1:]


def _count_macs_at(window: MainWindow, shapes: Shapes) -> None:
    report = window.session.report
    assert report is not None
    measured = with_input_shapes(report, shapes)
    window.report = measured
    window.session.update_report(measured)
    if not shapes:
        window.statusBar().showMessage(
            "MACs are unknown until an input size or evaluation data is given.", 8000
        )
        return
    sizes = ", ".join(f"{name} {'×'.join(map(str, dims))}" for name, dims in shapes.items())
    total = "unknown" if measured.macs is None else human_count(measured.macs)
    window.statusBar().showMessage(f"MACs counted for {sizes}: {total} per inference.", 8000)
