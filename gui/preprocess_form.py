"""`PreprocessForm`: the preprocessing fields of the data dialog (resize, crop, scale, mean, std, channel
order, layout, grayscale) with presets, and the text ↔ value parsers behind them.

The form only turns text into the plain values of a recipe's "preprocess" object and back; core's
`PreprocessSpec.from_dict` judges them. A field that is not even a number raises `DatasetError` with one
sentence naming the field, which the dialog shows inline.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QFormLayout, QGroupBox, QLineEdit, QWidget

from slimscope.core.data import PreprocessSpec
from slimscope.core.errors import DatasetError

CUSTOM = "Custom"
PRESETS: dict[str, tuple[float, tuple[float, ...] | None, tuple[float, ...] | None]] = {
    "ImageNet (mean/std)": (1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "0–1": (1 / 255, None, None),
    "Raw (0–255)": (1.0, None, None),
}  # (scale, mean, std)
GRAYSCALE = (("As in the data", None), ("Gray (1 channel)", True), ("Colour (RGB)", False))
TITLE = "Preprocessing (for images and uint8 arrays; float arrays are used as they are)"


class PreprocessForm(QGroupBox):
    """Emits `changed` when the user edits a field or picks a preset (not when `set_spec` fills it)."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(TITLE, parent)
        self._syncing = False
        self.preset = QComboBox()
        self.preset.addItems([CUSTOM, *PRESETS])
        self.resize_edit = QLineEdit(placeholderText="none — e.g. 256 (shorter side) or 224,224")
        self.crop_edit = QLineEdit(placeholderText="none — e.g. 224 or 224,224")
        self.scale_edit = QLineEdit()
        self.mean_edit = QLineEdit(placeholderText="none — e.g. 0.485, 0.456, 0.406")
        self.std_edit = QLineEdit(placeholderText="none — e.g. 0.229, 0.224, 0.225")
        self.channel_order = QComboBox()
        self.channel_order.addItems(["RGB", "BGR"])
        self.layout_combo = QComboBox()
        self.layout_combo.addItems(["NCHW", "NHWC"])
        self.grayscale = QComboBox()
        self.grayscale.addItems([name for name, _ in GRAYSCALE])
        self._set_tooltips()
        form = QFormLayout(self)
        for label, widget in (
            ("Preset", self.preset), ("Resize", self.resize_edit), ("Centre crop", self.crop_edit),
            ("Scale", self.scale_edit), ("Mean", self.mean_edit), ("Std", self.std_edit),
            ("Channel order", self.channel_order), ("Layout", self.layout_combo), ("Grayscale", self.grayscale),
        ):  # fmt: skip
            form.addRow(label, widget)
        for edit in (self.resize_edit, self.crop_edit, self.scale_edit, self.mean_edit, self.std_edit):
            edit.textChanged.connect(self._on_edited)
        for combo in (self.channel_order, self.layout_combo, self.grayscale):
            combo.currentIndexChanged.connect(self._on_edited)
        self.preset.currentTextChanged.connect(self._apply_preset)

    def _set_tooltips(self) -> None:
        tips = {
            self.preset: "Fill scale, mean and std for a common convention (as the model was trained)",
            self.resize_edit: "Resize each image: one number sets the shorter side, height,width an exact size",
            self.crop_edit: "Cut the centre of each image to this size (after resizing)",
            self.scale_edit: "Pixel values 0–255 are multiplied by this first (1/255 gives 0–1)",
            self.mean_edit: "Subtracted per channel after scaling, RGB order (one value for all channels)",
            self.std_edit: "Divided per channel after the mean, RGB order (one value for all channels)",
            self.channel_order: "The colour order the model takes",
            self.layout_combo: "NCHW: channels first (PyTorch); NHWC: channels last (TensorFlow)",
            self.grayscale: "Convert images to one channel or to RGB, or keep each as it is",
        }
        for widget, tip in tips.items():
            widget.setToolTip(tip)

    def set_spec(self, spec: PreprocessSpec) -> None:
        """Show `spec` in the fields (and the preset it matches)."""
        self._syncing = True
        self.resize_edit.setText(size_text(spec.resize))
        self.crop_edit.setText(size_text(spec.center_crop))
        self.scale_edit.setText(scale_text(spec.scale))
        self.mean_edit.setText(numbers_text(spec.mean))
        self.std_edit.setText(numbers_text(spec.std))
        self.channel_order.setCurrentText(spec.channel_order)
        self.layout_combo.setCurrentText(spec.layout)
        self.grayscale.setCurrentIndex([value for _, value in GRAYSCALE].index(spec.grayscale))
        self._syncing = False
        self._sync_preset()

    def spec_data(self) -> dict[str, Any]:
        """The fields as a recipe's "preprocess" object (before core validates it); raises DatasetError
        for a field that is not a number, a list of numbers or a size."""
        data: dict[str, Any] = {
            "resize": parse_size(self.resize_edit.text(), "Resize"),
            "center_crop": parse_size(self.crop_edit.text(), "Centre crop"),
            "scale": parse_scale(self.scale_edit.text()),
            "mean": parse_numbers(self.mean_edit.text(), "Mean"),
            "std": parse_numbers(self.std_edit.text(), "Std"),
            "channel_order": self.channel_order.currentText(),
            "layout": self.layout_combo.currentText(),
            "grayscale": GRAYSCALE[self.grayscale.currentIndex()][1],
        }
        return {key: value for key, value in data.items() if value is not None}

    def _on_edited(self, *_args: object) -> None:
        if self._syncing:
            return
        self._sync_preset()
        self.changed.emit()

    def _apply_preset(self, name: str) -> None:
        if self._syncing or name not in PRESETS:
            return
        scale, mean, std = PRESETS[name]
        spec = PreprocessSpec(scale=scale, mean=mean, std=std)
        self._syncing = True
        self.scale_edit.setText(scale_text(spec.scale))
        self.mean_edit.setText(numbers_text(spec.mean))
        self.std_edit.setText(numbers_text(spec.std))
        self._syncing = False
        self._on_edited()

    def _sync_preset(self) -> None:
        """Show the preset the scale, mean and std match, or Custom."""
        try:
            current = (
                parse_scale(self.scale_edit.text()),
                _tuple(parse_numbers(self.mean_edit.text(), "Mean")),
                _tuple(parse_numbers(self.std_edit.text(), "Std")),
            )
        except DatasetError:
            current = None
        name = next((name for name, values in PRESETS.items() if values == current), CUSTOM)
        self._syncing = True
        self.preset.setCurrentText(name)
        self._syncing = False


# ---------------------------------------------------------------------- text ↔ values


def scale_text(scale: float) -> str:
    return "1/255" if scale == 1 / 255 else str(scale)


def numbers_text(values: tuple[float, ...] | None) -> str:
    return "" if values is None else ", ".join(str(v) for v in values)


def size_text(size: int | tuple[int, int] | None) -> str:
    if size is None:
        return ""
    return str(size) if isinstance(size, int) else f"{size[0]},{size[1]}"


def _tuple(values: list[float] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(values)


def parse_numbers(text: str, field: str) -> list[float] | None:
    """ "0.5, 0.4 0.3" → [0.5, 0.4, 0.3]; empty → None."""
    parts = [part for part in text.replace(",", " ").split() if part]
    if not parts:
        return None
    try:
        return [float(part) for part in parts]
    except ValueError:
        raise DatasetError(
            f"{field} '{text.strip()}' is not a list of numbers; write them separated by commas, e.g. 0.5, 0.5, 0.5."
        ) from None


def parse_size(text: str, field: str) -> int | list[int] | None:
    """ "224" → 224, "224,200" or "224x200" → [224, 200]; empty → None."""
    parts = [part for part in text.replace(",", " ").replace("x", " ").split() if part]
    if not parts:
        return None
    try:
        sizes = [int(part) for part in parts]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2):
        raise DatasetError(
            f"{field} '{text.strip()}' is not a size; write one number or height,width, e.g. 224,224."
        )
    return sizes[0] if len(sizes) == 1 else sizes


def parse_scale(text: str) -> float:
    """ "1/255" → 1/255, "0.5" → 0.5."""
    numerator, _, denominator = text.strip().partition("/")
    try:
        value = float(numerator) / float(denominator) if denominator else float(numerator)
    except (ValueError, ZeroDivisionError):
        raise DatasetError(f"Scale '{text.strip()}' is not a number; write e.g. 1/255 or 1.") from None
    return value
