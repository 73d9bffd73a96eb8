"""The exceptions Slimscope raises on purpose. Each message is one sentence a user understands.

The CLI prints `str(error)` on one line and exits with code 2; the GUI shows it in a dialog.
Anything that is not a `SlimscopeError` is a bug in Slimscope, not a problem with the user's input.
"""

from __future__ import annotations

import re

# C0 and C1 control characters (line breaks, escape) and Unicode's line and paragraph separators.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """`text` with control characters written as escapes (\\n, \\x1b): a file name or a name quoted from
    a file can then neither start a made-up line nor send the terminal an escape sequence."""
    return _CONTROL_CHARACTERS.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def escaped_lines(text: str) -> str:
    """Text of several lines with each line's control characters escaped (see `one_line`)."""
    return "\n".join(one_line(line) for line in text.split("\n"))


class SlimscopeError(Exception):
    """Base class: the message is meant for the user, not for a developer."""


class ModelLoadError(SlimscopeError):
    """A model file cannot be opened: unreadable, not a model, unsafe, or unsupported."""


class UntrustedModelError(ModelLoadError):
    """The file can run code when opened and the user has not said they trust it."""


class PickleRefusedError(ModelLoadError):
    """The file is a pickle (a checkpoint or arbitrary object); it is never unpickled."""


class InputShapeError(ModelLoadError):
    """The model's input shape is unknown or the shape the user gave does not fit."""


class ConversionError(ModelLoadError):
    """Converting a PyTorch file to ONNX failed (in the child process that ran it)."""


class RecipeError(SlimscopeError):
    """A recipe is invalid; `layer` and `field` say where, when known."""

    def __init__(self, message: str, *, layer: str | None = None, field: str | None = None):
        super().__init__(message)
        self.layer = layer
        self.field = field


class DatasetError(SlimscopeError):
    """Evaluation or calibration data cannot be read or does not fit the model."""


class OptimizeError(SlimscopeError):
    """Applying a recipe failed, or produced a model onnxruntime cannot run."""


class ExportError(SlimscopeError):
    """The optimized model cannot be written where the user asked."""


class CancelledError(SlimscopeError):
    """The user cancelled a long-running task."""


class QuantizationError(SlimscopeError):
    """onnxruntime's quantizer could not quantize the model as asked."""


class TrainingError(SlimscopeError):
    """Retraining (gradual pruning with fine-tuning, quantization-aware training) cannot run as asked."""


class WorkerCrashError(OptimizeError):
    """The worker process doing risky work (reading a file, quantizing, ...) crashed; Slimscope goes on.

    An `OptimizeError` subclass because a crash of the worker process was one before this class existed."""


class WorkerMemoryError(WorkerCrashError):
    """The work needed more memory than its limit (or the computer) allows, and was stopped."""


class WorkerTimeoutError(WorkerCrashError):
    """The work took longer than its time limit, and was stopped."""
