"""`SettingsPanel`: pruning and quantization of the selected layers, or of all layers (the defaults).

It shows the first target's merged settings and turns each edit into a new Recipe (`with_layer` for each
selected layer, or `with_defaults`), handed to `edit_requested` — the window pushes it onto its undo stack.
It re-reads the Session whenever the recipe or the selection changes.
"""

from __future__ import annotations

from dataclasses import asdict, replace

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from slimscope.core.recipe import LayerSettings, PruneSpec, QuantSpec, Recipe
from slimscope.core.session import Session

STRUCTURES = ("unstructured", "2:4", "channel")
WEIGHT_BITS = (8, 16, 7, 6, 5, 4, 3, 2)
GRANULARITIES = ("per_channel", "per_tensor")
SLIDER_STEPS = 100  # the slider moves in whole percent; the spin box holds the exact value
MAX_SPARSITY = 0.99


class SettingsPanel(QWidget):
    edit_requested = Signal(object, str, str)  # new Recipe, undo text, merge key ("" never merges)

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.selected: list[str] = []
        self._syncing = False
        self.target_label = QLabel()
        self.defaults_mode = QCheckBox("Edit the defaults (all layers)")
        self.prune_box = QGroupBox("Prune", checkable=True)
        self.structure = QComboBox()
        self.structure.addItems(STRUCTURES)
        self.sparsity_slider = QSlider(Qt.Orientation.Horizontal, minimum=0, maximum=SLIDER_STEPS - 1)
        self.sparsity_spin = QDoubleSpinBox(minimum=0.0, maximum=MAX_SPARSITY, singleStep=0.05, decimals=3)
        self.quant_box = QGroupBox("Quantize", checkable=True)
        self.weight_bits = QComboBox()
        self.weight_bits.addItems([str(bits) for bits in WEIGHT_BITS])
        self.granularity = QComboBox()
        self.granularity.addItems(GRANULARITIES)
        self._set_tooltips()
        self._lay_out()
        self.defaults_mode.toggled.connect(self.sync)
        self.prune_box.toggled.connect(lambda _on: self._edit_prune("Prune on/off"))
        self.structure.currentTextChanged.connect(lambda _t: self._edit_prune("Pruning structure"))
        self.sparsity_slider.valueChanged.connect(self._on_slider)
        self.sparsity_spin.valueChanged.connect(self._on_spin)
        self.quant_box.toggled.connect(lambda _on: self._edit_quant("Quantize on/off"))
        self.weight_bits.currentTextChanged.connect(lambda _t: self._edit_quant("Weight bits"))
        self.granularity.currentTextChanged.connect(lambda _t: self._edit_quant("Granularity"))
        session.recipe_changed.connect(self.sync)
        self.sync()

    def _set_tooltips(self) -> None:
        tips = {
            self.defaults_mode: "Edit the settings every layer inherits, instead of the selected layers",
            self.prune_box: "Zero or remove weights of the selected layers",
            self.structure: "unstructured: single weights (smaller gzip, not faster); 2:4: 2 of every 4 weights "
            "along the inputs; channel: whole output channels (smaller and faster)",
            self.sparsity_slider: "Fraction of weights (or, for channel, of output channels) removed",
            self.sparsity_spin: "Fraction of weights (or, for channel, of output channels) removed",
            self.quant_box: "Store and run the selected layers in integers (onnxruntime QDQ)",
            self.weight_bits: "8: int8 (fast); 4: int4 (smaller, slower on CPU); 2-7: simulated in int8; 16: int16",
            self.granularity: "One scale per output channel (more accurate) or one for the whole weight",
        }
        for widget, tip in tips.items():
            widget.setToolTip(tip)

    def _lay_out(self) -> None:
        sparsity = QHBoxLayout()
        sparsity.addWidget(self.sparsity_slider, 1)
        sparsity.addWidget(self.sparsity_spin)
        prune_form = QFormLayout(self.prune_box)
        prune_form.addRow("Structure", self.structure)
        prune_form.addRow("Sparsity", sparsity)
        quant_form = QFormLayout(self.quant_box)
        quant_form.addRow("Weight bits", self.weight_bits)
        quant_form.addRow("Granularity", self.granularity)
        layout = QVBoxLayout(self)
        layout.addWidget(self.target_label)
        layout.addWidget(self.defaults_mode)
        layout.addWidget(self.prune_box)
        layout.addWidget(self.quant_box)
        layout.addStretch(1)

    # ------------------------------------------------------------------ what is edited

    def set_selected_layers(self, names: list[str]) -> None:
        self.selected = list(names)
        self.sync()

    @property
    def targets(self) -> list[str]:
        """The layers edited; empty in defaults mode."""
        return [] if self.defaults_mode.isChecked() else self.selected

    def _shown_settings(self, recipe: Recipe) -> LayerSettings:
        return recipe.settings_for(self.targets[0]) if self.targets else recipe.defaults

    def sync(self, *_args: object) -> None:
        """Show the Session's settings for the current targets, without emitting edits."""
        recipe = self.session.recipe
        editable = recipe is not None and (self.defaults_mode.isChecked() or bool(self.selected))
        for widget in (self.prune_box, self.quant_box):
            widget.setEnabled(editable)
        if self.defaults_mode.isChecked():
            self.target_label.setText("All layers that do not override them")
        elif self.selected:
            more = f" and {len(self.selected) - 1} more" if len(self.selected) > 1 else ""
            self.target_label.setText(f"{self.selected[0]}{more}")
        else:
            self.target_label.setText("Select layers, or edit the defaults")
        if recipe is None:
            return
        settings = self._shown_settings(recipe)
        self._syncing = True
        try:
            prune = settings.prune
            self.prune_box.setChecked(prune is not None)
            if prune is not None:
                if self.structure.findText(prune.structure) < 0:
                    self.structure.addItem(prune.structure)  # another N:M, as the recipe file says
                self.structure.setCurrentText(prune.structure)
                self._show_sparsity(prune.sparsity or 0.0)
            quant = settings.quantize
            self.quant_box.setChecked(quant is not None)
            if quant is not None:
                self.weight_bits.setCurrentText(str(quant.weight_bits))
                self.granularity.setCurrentText(quant.granularity)
        finally:
            self._syncing = False

    def _show_sparsity(self, value: float) -> None:
        self.sparsity_spin.setValue(value)
        self.sparsity_slider.setValue(round(value * SLIDER_STEPS))

    # ------------------------------------------------------------------ edits

    def _on_slider(self, step: int) -> None:
        if self._syncing:
            return
        self._syncing = True
        self.sparsity_spin.setValue(step / SLIDER_STEPS)
        self._syncing = False
        self._edit_prune("Sparsity", merge=True)

    def _on_spin(self, value: float) -> None:
        if self._syncing:
            return
        self._syncing = True
        self.sparsity_slider.setValue(round(value * SLIDER_STEPS))
        self._syncing = False
        self._edit_prune("Sparsity", merge=True)

    def _prune_spec(self, recipe: Recipe) -> PruneSpec | None:
        if not self.prune_box.isChecked():
            return None
        base = self._shown_settings(recipe).prune or recipe.defaults.prune or PruneSpec()
        structure = self.structure.currentText()
        sparsity = None if ":" in structure else self.sparsity_spin.value()
        # A sparsity set on chosen layers is theirs alone; the defaults keep their ranking scope.
        scope = "layer" if self.targets else base.scope
        return replace(base, structure=structure, sparsity=sparsity, threshold=None, scope=scope)

    def _quant_spec(self, recipe: Recipe) -> QuantSpec | None:
        if not self.quant_box.isChecked():
            return None
        base = self._shown_settings(recipe).quantize or recipe.defaults.quantize or QuantSpec()
        granularity = self.granularity.currentText()
        return replace(base, weight_bits=int(self.weight_bits.currentText()), granularity=granularity)  # type: ignore[arg-type]

    def _edit_prune(self, what: str, merge: bool = False) -> None:
        if not self._syncing and self.session.recipe is not None:
            self._request(what, merge, prune=self._prune_spec(self.session.recipe))

    def _edit_quant(self, what: str) -> None:
        if not self._syncing and self.session.recipe is not None:
            self._request(what, False, quantize=self._quant_spec(self.session.recipe))

    def _request(self, what: str, merge: bool, **change: object) -> None:
        recipe = self.session.recipe
        assert recipe is not None
        if self.targets:
            # Every field spelled out: a spec object would drop fields equal to the spec's own defaults
            # (scope "layer"), and the recipe's defaults (scope "global") would fill them in again.
            fields = {key: _explicit(value) for key, value in change.items()}
            for name in self.targets:
                recipe = recipe.with_layer(name, **fields)  # type: ignore[arg-type]
            where = self.targets[0] if len(self.targets) == 1 else f"{len(self.targets)} layers"
        elif self.defaults_mode.isChecked():
            recipe = recipe.with_defaults(**change)  # type: ignore[arg-type]
            where = "defaults"
        else:
            return
        key = f"{what}:{','.join(self.targets) or 'defaults'}" if merge else ""
        self.edit_requested.emit(recipe, f"{what} ({where})", key)


def _explicit(spec: object) -> dict[str, object] | None:
    return None if spec is None else {k: v for k, v in asdict(spec).items() if v is not None}  # type: ignore[call-overload]
