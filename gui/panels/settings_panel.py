"""`SettingsPanel`: pruning and quantization of the selected layers, or of all layers (the defaults).

It shows the first target's merged settings and turns each edit into a new Recipe (`with_layer` for each
selected layer, or `with_defaults`), handed to `edit_requested` — the window pushes it onto its undo stack.
It re-reads the Session whenever the recipe or the selection changes.
"""

from __future__ import annotations

from collections.abc import Callable
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

from slimscope.core.recipe import LayerSettings, PruneSpec, PtqSpec, QuantSpec, Recipe
from slimscope.core.session import Session

STRUCTURES = ("unstructured", "2:4", "channel")
AMOUNTS = ("sparsity", "threshold")  # how much to prune: a target fraction, or a magnitude cut
WEIGHT_BITS = (8, 16, 7, 6, 5, 4, 3, 2)
ACTIVATION_BITS = (8, 16)
GRANULARITIES = ("per_channel", "per_tensor")
CALIBRATIONS = ("minmax", "percentile", "entropy")
KEEP_FIRST_LAST = {"as the others": None, "16-bit": "int16", "float": "float"}  # shown text → recipe value
THRESHOLD_MAX = 1e6
DEFAULT_THRESHOLD = 0.01
SLIDER_STEPS = 100  # the slider moves in whole percent; the spin box holds the exact value
MAX_SPARSITY = 0.99


class SettingsPanel(QWidget):
    edit_requested = Signal(object, str, str)  # new Recipe, undo text, merge key ("" never merges)

    def __init__(self, session: Session, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.selected: list[str] = []
        self._syncing = False
        # The window sets this: the magnitude the current pruning cuts at (the histogram's lines), if known.
        self.suggest_threshold: Callable[[], float | None] | None = None
        self.target_label = QLabel()
        self.defaults_mode = QCheckBox("Edit the defaults (all layers)")
        self.prune_box = QGroupBox("Prune", checkable=True)
        self.structure = QComboBox()
        self.structure.addItems(STRUCTURES)
        self.sparsity_slider = QSlider(Qt.Orientation.Horizontal, minimum=0, maximum=SLIDER_STEPS - 1)
        self.sparsity_spin = QDoubleSpinBox(minimum=0.0, maximum=MAX_SPARSITY, singleStep=0.05, decimals=3)
        self.amount = QComboBox()
        self.amount.addItems(AMOUNTS)
        self.threshold_spin = QDoubleSpinBox(minimum=0.0, maximum=THRESHOLD_MAX, decimals=5, singleStep=0.001)
        self.rank_globally = QCheckBox("Rank weights across all layers")
        self.quant_box = QGroupBox("Quantize", checkable=True)
        self.weight_bits = QComboBox()
        self.weight_bits.addItems([str(bits) for bits in WEIGHT_BITS])
        self.activation_bits = QComboBox()
        self.activation_bits.addItems([str(bits) for bits in ACTIVATION_BITS])
        self.granularity = QComboBox()
        self.granularity.addItems(GRANULARITIES)
        self.symmetric = QCheckBox("Symmetric weights")
        self.activation_symmetric = QCheckBox("Symmetric activations")
        self.calibration = QComboBox()
        self.calibration.addItems(CALIBRATIONS)
        # Whole-model aids to post-training quantization (the recipe's "ptq" section).
        self.ptq_box = QGroupBox("Quantization aids (whole model)")
        self.equalize = QCheckBox("Equalize channels across layers")
        self.relu6_to_relu = QCheckBox("Let equalization cross ReLU6 (makes it ReLU)")
        self.bias_correction = QCheckBox("Correct biases after quantizing")
        self.keep_first_last = QComboBox()
        self.keep_first_last.addItems(list(KEEP_FIRST_LAST))
        self._set_tooltips()
        self._lay_out()
        self.defaults_mode.toggled.connect(self.sync)
        self.prune_box.toggled.connect(lambda _on: self._edit_prune("Prune on/off"))
        self.structure.currentTextChanged.connect(lambda _t: self._edit_prune("Pruning structure"))
        self.sparsity_slider.valueChanged.connect(self._on_slider)
        self.sparsity_spin.valueChanged.connect(self._on_spin)
        self.amount.currentTextChanged.connect(lambda _t: self._edit_prune("Prune by"))
        self.threshold_spin.valueChanged.connect(lambda _v: self._edit_prune("Threshold", merge=True))
        self.rank_globally.toggled.connect(lambda _on: self._edit_prune("Ranking"))
        self.quant_box.toggled.connect(lambda _on: self._edit_quant("Quantize on/off"))
        self.weight_bits.currentTextChanged.connect(lambda _t: self._edit_quant("Weight bits"))
        self.activation_bits.currentTextChanged.connect(lambda _t: self._edit_quant("Activation bits"))
        self.granularity.currentTextChanged.connect(lambda _t: self._edit_quant("Granularity"))
        self.symmetric.toggled.connect(lambda _on: self._edit_quant("Weight symmetry"))
        self.activation_symmetric.toggled.connect(lambda _on: self._edit_quant("Activation symmetry"))
        self.calibration.currentTextChanged.connect(lambda _t: self._edit_quant("Calibration"))
        for box, what in ((self.equalize, "Equalization"), (self.relu6_to_relu, "ReLU6 to ReLU"),
                          (self.bias_correction, "Bias correction")):  # fmt: skip
            box.toggled.connect(lambda _on, what=what: self._edit_ptq(what))
        self.keep_first_last.currentTextChanged.connect(lambda _t: self._edit_ptq("First and last layers"))
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
            self.amount: "sparsity: remove this fraction of the weights; threshold: zero every weight with "
            "|w| below a magnitude (drag the dashed lines on the histogram to set it)",
            self.threshold_spin: "Weights with a magnitude below this become zero",
            self.rank_globally: "One magnitude cut across every layer that follows the defaults, reaching the "
            "sparsity together (layers with many small weights lose more); off: each layer reaches it alone",
            self.quant_box: "Store and run the selected layers in integers (onnxruntime QDQ)",
            self.weight_bits: "8: int8 (fast); 4: int4 (smaller, slower on CPU); 2-7: simulated in int8; 16: int16",
            self.activation_bits: "8: uint8/int8 activations (fast kernels); 16: int16 (more accurate, slower)",
            self.granularity: "One scale per output channel (more accurate) or one for the whole weight",
            self.symmetric: "Weights quantized around zero (no zero point): what fast int8 kernels expect",
            self.activation_symmetric: "Activations around zero (int8); off: asymmetric uint8, which "
            "onnxruntime's fast U8S8 kernels need",
            self.equalize: "Cross-layer equalization: rescale the channels of consecutive convolutions so their "
            "weight ranges match (the float model computes the same); rescues depthwise networks",
            self.relu6_to_relu: "Equalization cannot cross ReLU6; this replaces ReLU6 by ReLU so it can. It "
            "CHANGES the float model — compare its accuracy",
            self.bias_correction: "After quantizing, move each layer's mean output error (measured on the "
            "calibration data) into its bias",
            self.keep_first_last: "The first and last layers are the most sensitive in most networks: keep them "
            "in 16 bits or in float",
            self.calibration: "How activation ranges are chosen from the calibration data: minmax (every "
            "value), percentile (ignores rare outliers), entropy (keeps the distribution's information)",
        }
        for widget, tip in tips.items():
            widget.setToolTip(tip)

    def _lay_out(self) -> None:
        sparsity = QHBoxLayout()
        sparsity.addWidget(self.sparsity_slider, 1)
        sparsity.addWidget(self.sparsity_spin)
        prune_form = QFormLayout(self.prune_box)
        prune_form.addRow("Structure", self.structure)
        prune_form.addRow("Prune by", self.amount)
        prune_form.addRow("Sparsity", sparsity)
        self._sparsity_row = sparsity
        prune_form.addRow("Threshold", self.threshold_spin)
        prune_form.addRow(self.rank_globally)
        self._prune_form = prune_form
        quant_form = QFormLayout(self.quant_box)
        quant_form.addRow("Weight bits", self.weight_bits)
        quant_form.addRow("Activation bits", self.activation_bits)
        quant_form.addRow("Granularity", self.granularity)
        quant_form.addRow("Calibration", self.calibration)
        quant_form.addRow(self.symmetric)
        quant_form.addRow(self.activation_symmetric)
        layout = QVBoxLayout(self)
        layout.addWidget(self.target_label)
        layout.addWidget(self.defaults_mode)
        layout.addWidget(self.prune_box)
        layout.addWidget(self.quant_box)
        ptq_form = QFormLayout(self.ptq_box)
        ptq_form.addRow(self.equalize)
        ptq_form.addRow(self.relu6_to_relu)
        ptq_form.addRow(self.bias_correction)
        ptq_form.addRow("First and last layers", self.keep_first_last)
        layout.addWidget(self.ptq_box)
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
        self.ptq_box.setEnabled(recipe is not None)
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
                self.amount.setCurrentText("threshold" if prune.threshold is not None else "sparsity")
                if prune.threshold is not None:
                    self.threshold_spin.setValue(prune.threshold)
                self.rank_globally.setChecked(prune.scope == "global")
            self._show_prune_rows(prune)
            quant = settings.quantize
            self.quant_box.setChecked(quant is not None)
            if quant is not None:
                self.weight_bits.setCurrentText(str(quant.weight_bits))
                self.activation_bits.setCurrentText(str(quant.activation_bits))
                self.granularity.setCurrentText(quant.granularity)
                self.calibration.setCurrentText(quant.calibration)
                self.symmetric.setChecked(quant.symmetric)
                self.activation_symmetric.setChecked(quant.activation_symmetric)
            ptq = recipe.ptq
            self.equalize.setChecked(ptq.equalize)
            self.relu6_to_relu.setChecked(ptq.relu6_to_relu)
            self.relu6_to_relu.setEnabled(ptq.equalize)
            self.bias_correction.setChecked(ptq.bias_correction)
            shown = {value: text for text, value in KEEP_FIRST_LAST.items()}
            self.keep_first_last.setCurrentText(shown[ptq.keep_first_last])
        finally:
            self._syncing = False

    def _show_prune_rows(self, prune: PruneSpec | None) -> None:
        """Only the rows that apply: N:M has no amount; a threshold has no sparsity and no ranking."""
        n_m = prune is not None and prune.n is not None
        by_threshold = prune is not None and prune.threshold is not None
        channel = prune is not None and prune.structure == "channel"
        for field, visible in (
            (self.amount, not n_m and not channel),
            (self._sparsity_row, not n_m and not by_threshold),
            (self.threshold_spin, by_threshold),
            (self.rank_globally, not n_m and not by_threshold and not self.targets),
        ):
            self._prune_form.setRowVisible(field, visible)

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
        if ":" in structure:
            return replace(base, structure=structure, sparsity=None, threshold=None, scope="layer")
        if self.amount.currentText() == "threshold" and structure != "channel":
            threshold = self.threshold_spin.value()
            if not threshold and base.threshold is None:  # switching to a threshold: start where the cut is
                threshold = (
                    self.suggest_threshold() if self.suggest_threshold else None
                ) or DEFAULT_THRESHOLD
            return replace(base, structure=structure, sparsity=None, threshold=threshold, scope="layer")
        # A sparsity set on chosen layers is theirs alone; the defaults rank as the check box says.
        scope = "global" if not self.targets and self.rank_globally.isChecked() else "layer"
        return replace(
            base, structure=structure, sparsity=self.sparsity_spin.value(), threshold=None, scope=scope
        )

    def _quant_spec(self, recipe: Recipe) -> QuantSpec | None:
        if not self.quant_box.isChecked():
            return None
        base = self._shown_settings(recipe).quantize or recipe.defaults.quantize or QuantSpec()
        return replace(
            base,
            weight_bits=int(self.weight_bits.currentText()),
            activation_bits=int(self.activation_bits.currentText()),
            granularity=self.granularity.currentText(),
            calibration=self.calibration.currentText(),
            symmetric=self.symmetric.isChecked(),
            activation_symmetric=self.activation_symmetric.isChecked(),
        )

    def _edit_prune(self, what: str, merge: bool = False) -> None:
        if not self._syncing and self.session.recipe is not None:
            self._request(what, merge, prune=self._prune_spec(self.session.recipe))

    def _edit_ptq(self, what: str) -> None:
        recipe = self.session.recipe
        if self._syncing or recipe is None:
            return
        ptq = PtqSpec(
            equalize=self.equalize.isChecked(),
            relu6_to_relu=self.equalize.isChecked() and self.relu6_to_relu.isChecked(),
            bias_correction=self.bias_correction.isChecked(),
            keep_first_last=KEEP_FIRST_LAST[self.keep_first_last.currentText()],  # type: ignore[arg-type]
        )
        if ptq != recipe.ptq:
            self.edit_requested.emit(recipe.with_ptq(ptq), f"{what} (whole model)", "")

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
