"""`TrainSpecForm`: the recipe's "training" section (core's `TrainSpec`) as a form, and `plan_text`, one line
saying what retraining to the recipe will do.

Each field is bound to one `TrainSpec` field by its dotted path ("qat.epochs"). An edit changes that field
alone (the others keep the recipe's exact values, whatever the widgets round them to) and is handed to
`edit_requested`; the dialog makes it an undoable recipe edit. `show_spec` re-reads the recipe without
emitting edits. Spin boxes report a value when it is entered (Enter, focus out, arrows), not per keystroke:
one undo step per change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from slimscope.core.layers import Layer
from slimscope.core.recipe import PruneSpec, Recipe
from slimscope.core.train.train_spec import TrainSpec


@dataclass(frozen=True)
class SpecField:
    path: str  # the TrainSpec field, dotted for nested sections
    label: str
    tooltip: str
    make: Callable[[], QWidget]
    to_widget: Callable[[Any], Any] = lambda value: value  # the spec's value → the widget's
    from_widget: Callable[[Any], Any] = lambda value: value  # and back


def _spin(minimum: int, maximum: int, suffix: str = "", special: str = "") -> Callable[[], QSpinBox]:
    def make() -> QSpinBox:
        box = QSpinBox(minimum=minimum, maximum=maximum, suffix=suffix)
        box.setSpecialValueText(special)  # shown at the minimum
        return box

    return make


def _learning_rate() -> QDoubleSpinBox:
    box = QDoubleSpinBox(minimum=1e-5, maximum=10.0, decimals=5)
    box.setStepType(QAbstractSpinBox.StepType.AdaptiveDecimalStepType)
    return box


def _combo(*items: str) -> Callable[[], QComboBox]:
    def make() -> QComboBox:
        box = QComboBox()
        box.addItems(items)
        return box

    return make


GROUPS: tuple[tuple[str, tuple[SpecField, ...]], ...] = (
    ("Pruning schedule", (
        SpecField("steps", "Steps", "Pruning steps from the dense model to the recipe's target, with "
                  "fine-tuning after each: more steps prune more gently and take longer", _spin(1, 100)),
        SpecField("schedule", "Schedule", "How sparsity rises over the steps. cubic: much at first, while "
                  "many weights are redundant, little near the target (Zhu & Gupta 2017); linear: equal parts",
                  _combo("cubic", "linear")),
        SpecField("epochs_per_step", "Epochs per step", "Fine-tuning epochs after each pruning step but the "
                  "last", _spin(0, 1000)),
        SpecField("final_epochs", "Final epochs", "Fine-tuning epochs after the last step, at the full "
                  "target; stops early when validation accuracy stops improving and keeps the best weights",
                  _spin(0, 1000)),
    )),
    ("Fine-tuning", (
        SpecField("batch_size", "Batch size", "Training samples per optimizer step", _spin(1, 4096)),
        SpecField("learning_rate", "Learning rate", "The optimizer's step size at the start of each "
                  "fine-tuning phase (it decays along a cosine within the phase); too high and the loss "
                  "diverges", _learning_rate),
        SpecField("optimizer", "Optimizer", "adam (the default): Adam, less sensitive to the learning rate; "
                  "sgd: SGD with Nesterov momentum 0.9, what most vision networks are trained with", _combo("sgd", "adam")),
        SpecField("max_batches_per_epoch", "Max batches per epoch", "Read at most this many batches per epoch "
                  "(quick runs on large data); all: every training sample once per epoch",
                  _spin(0, 1_000_000, special="all"), lambda v: v or 0, lambda v: v or None),
        SpecField("val_fraction", "Validation share", "Share of the training data held out for validation "
                  "when no validation data is given", _spin(1, 50, suffix=" %"),
                  lambda v: round(100 * v), lambda v: v / 100),
        SpecField("augment.shift", "Random shift", "Shift each training image by up to this many pixels in "
                  "each direction (zero padded); none: off", _spin(0, 64, suffix=" px", special="none")),
        SpecField("augment.flip", "Random flip", "Mirror training images left to right at random (leave off "
                  "for digits and text, which are not symmetric)", lambda: QCheckBox("mirror left–right")),
    )),
    ("Quantization-aware training", (
        SpecField("qat.epochs", "QAT epochs", "After quantizing, fine-tune the quantized model with "
                  "quantization simulated, so the weights learn to live with it; 0 skips it (applies when the "
                  "recipe quantizes)", _spin(0, 1000)),
        SpecField("qat.ranges", "QAT ranges", "calibrated: keep the activation ranges found by calibration; "
                  "learned: train them with the weights (LSQ)", _combo("calibrated", "learned")),
    )),
)  # fmt: skip
FIELDS = tuple(field for _, fields in GROUPS for field in fields)


def spec_value(spec: Any, path: str) -> Any:
    for part in path.split("."):
        spec = getattr(spec, part)
    return spec


def with_value(spec: Any, path: str, value: Any) -> Any:
    """`spec` with the field at the dotted `path` replaced (nested frozen dataclasses are rebuilt)."""
    head, _, rest = path.partition(".")
    return replace(spec, **{head: with_value(getattr(spec, head), rest, value) if rest else value})


class TrainSpecForm(QWidget):
    edit_requested = Signal(object, str)  # the new TrainSpec, the undo text

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.spec = TrainSpec()
        self.widgets: dict[str, QWidget] = {}
        self._syncing = False
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for title, fields in GROUPS:
            box = QGroupBox(title)
            form = QFormLayout(box)
            for field in fields:
                widget = field.make()
                widget.setToolTip(field.tooltip)
                if isinstance(widget, QAbstractSpinBox):
                    widget.setKeyboardTracking(False)  # a value when entered, not per keystroke
                form.addRow(field.label, widget)
                form.labelForField(widget).setToolTip(field.tooltip)
                self.widgets[field.path] = widget
                self._connect(field, widget)
            layout.addWidget(box)
        layout.addStretch(1)

    def widget(self, path: str) -> QWidget:
        return self.widgets[path]

    def show_spec(self, spec: TrainSpec) -> None:
        """Show `spec` without emitting edits."""
        self.spec = spec
        self._syncing = True
        try:
            for field in FIELDS:
                _set_widget(self.widgets[field.path], field.to_widget(spec_value(spec, field.path)))
        finally:
            self._syncing = False

    def _connect(self, field: SpecField, widget: QWidget) -> None:
        def edited(*_args: object) -> None:
            if self._syncing:
                return
            value = field.from_widget(_widget_value(widget))
            if value != spec_value(self.spec, field.path):
                text = f"{field.label}: {_value_text(value)}"
                self.edit_requested.emit(with_value(self.spec, field.path, value), text)

        if isinstance(widget, QSpinBox | QDoubleSpinBox):
            widget.valueChanged.connect(edited)
        elif isinstance(widget, QComboBox):
            widget.currentTextChanged.connect(edited)
        elif isinstance(widget, QCheckBox):
            widget.toggled.connect(edited)


def _value_text(value: Any) -> str:
    """A value as the undo entry shows it: "all" for no limit, "on"/"off" for switches."""
    if value is None:
        return "all"
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _widget_value(widget: QWidget) -> Any:
    if isinstance(widget, QSpinBox | QDoubleSpinBox):
        return widget.value()
    if isinstance(widget, QComboBox):
        return widget.currentText()
    assert isinstance(widget, QCheckBox)
    return widget.isChecked()


def _set_widget(widget: QWidget, value: Any) -> None:
    if isinstance(widget, QSpinBox | QDoubleSpinBox):
        widget.setValue(value)
    elif isinstance(widget, QComboBox):
        widget.setCurrentText(str(value))
    elif isinstance(widget, QCheckBox):
        widget.setChecked(bool(value))


# ---------------------------------------------------------------------- what the recipe asks


def _prune_words(spec: PruneSpec) -> str:
    if spec.n is not None:
        return spec.structure
    amount = f"{100 * spec.sparsity:.0f} %" if spec.sparsity is not None else f"|w| < {spec.threshold:g}"
    where = ", global" if spec.scope == "global" else ""
    return f"{amount} {spec.structure}{where}"


def _pruned(recipe: Recipe, layer: Layer) -> PruneSpec | None:
    """The layer's pruning as retraining applies it (core's `prune_targets` rules), else None."""
    spec = recipe.settings_for(layer.name).prune
    if spec is None or layer.quantized:
        return None
    if spec.structure == "channel":
        return spec if spec.sparsity else None
    return spec if spec.n is not None or spec.sparsity or spec.threshold else None


def plan_text(recipe: Recipe, layers: Sequence[Layer]) -> tuple[str, bool]:
    """What retraining to `recipe` does, in one line, and whether there is anything to retrain, e.g.
    "Prunes 12 layers (80 % unstructured, global) in 4 cubic steps; int8 weights → QAT 2 epochs"."""
    spec = recipe.training
    pruned = [_prune_words(p) for layer in layers if (p := _pruned(recipe, layer)) is not None]
    bits = sorted({q.weight_bits for layer in layers if (q := recipe.settings_for(layer.name).quantize)})
    parts = []
    if pruned:
        kinds = sorted(set(pruned))
        how = kinds[0] if len(kinds) == 1 else f"{len(kinds)} different settings"
        noun = "layer" if len(pruned) == 1 else "layers"
        steps = f"{spec.steps} {spec.schedule} step{'s' if spec.steps != 1 else ''}"
        parts.append(f"Prunes {len(pruned)} {noun} ({how}) in {steps}")
    else:
        parts.append("No pruning")
    if bits:
        weights = "/".join(f"int{b}" for b in bits) + " weights"
        qat = (
            f"QAT {spec.qat.epochs} epoch{'s' if spec.qat.epochs != 1 else ''}"
            if spec.qat.epochs
            else "no QAT"
        )
        parts.append(f"{weights} → {qat}")
    retrains = bool(pruned) or (bool(bits) and spec.qat.epochs > 0)
    if not retrains:
        return "The recipe neither prunes nor quantizes with QAT epochs: there is nothing to retrain.", False
    return "; ".join(parts), True
