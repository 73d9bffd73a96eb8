"""`Session`: what the window shows and edits — the open model, its recipe, data and latest comparison.

Plain Python with psygnal signals (no Qt): widgets subscribe to the signals, re-read the session when they
attach, and change it only through its methods. Every setter emits only when the value really changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from psygnal import Signal

from slimscope.core.comparison import Comparison
from slimscope.core.inspection import ModelReport
from slimscope.core.model import LoadedModel
from slimscope.core.recipe import Recipe, template_recipe
from slimscope.core.recipe_presets import DEMO_PRESET, preset_recipe
from slimscope.resources import DEMO_CALIBRATION, DEMO_DATA, DEMO_MODEL

if TYPE_CHECKING:
    from slimscope.core.train.finetune import FinetuneResult


class Session:
    model_changed = Signal(object)  # ModelReport | None
    report_changed = Signal(object)  # ModelReport: the open model measured again (MACs at another size)
    recipe_changed = Signal(object)  # Recipe | None
    data_changed = Signal()  # evaluation or calibration data
    result_changed = Signal(object)  # Comparison | None
    retrained_changed = Signal(object)  # FinetuneResult | None

    def __init__(self) -> None:
        self.report: ModelReport | None = None
        self.recipe: Recipe | None = None
        self.evaluation_data: Path | None = None
        self.calibration_data: Path | None = None  # None: calibrate on the evaluation data
        self.result: Comparison | None = None
        # The last retraining of this model to the current recipe (Recipe → Retrain…); None after any
        # model or recipe change, since its numbers belong to the recipe it was trained to.
        self.retrained: FinetuneResult | None = None

    @property
    def loaded(self) -> LoadedModel | None:
        return None if self.report is None else self.report.loaded

    @property
    def layer_names(self) -> list[str]:
        return [] if self.report is None else [layer.name for layer in self.report.layers]

    @property
    def result_is_current(self) -> bool:
        """True when the latest result was made with the current recipe."""
        return self.result is not None and self.result.recipe == self.recipe

    def set_model(self, report: ModelReport | None) -> None:
        """Open a model: a fresh template recipe, the demo's data for the demo model, no result yet."""
        self.report = report
        demo = report is not None and _same_file(report.loaded.source, DEMO_MODEL)
        # Every model starts quantized only; the demo shows pruning too, through the preset that does it.
        self.recipe = None if report is None else template_recipe(self.layer_names)
        if demo:
            self.recipe = preset_recipe(DEMO_PRESET, self.layer_names)
        self.evaluation_data = DEMO_DATA if demo else None
        self.calibration_data = DEMO_CALIBRATION if demo else None
        self.result = None
        self.set_retrained(None)
        self.model_changed.emit(report)
        self.data_changed.emit()
        self.result_changed.emit(None)
        self.recipe_changed.emit(self.recipe)

    def update_report(self, report: ModelReport) -> None:
        """The open model's inspection measured again (its MACs at an input size the model leaves open):
        the same model and layers, so the recipe, data and result stay."""
        if self.report is None or report.loaded is not self.report.loaded:
            raise RuntimeError("update_report takes a new inspection of the open model.")
        if report is not self.report:
            self.report = report
            self.report_changed.emit(report)

    def set_recipe(self, recipe: Recipe) -> None:
        if self.report is None:
            raise RuntimeError("No model is open.")
        if recipe != self.recipe:
            self.recipe = recipe
            self.set_retrained(None)
            self.recipe_changed.emit(recipe)

    def set_evaluation_data(self, path: Path | None) -> None:
        if path != self.evaluation_data:
            self.evaluation_data = path
            self.data_changed.emit()

    def set_calibration_data(self, path: Path | None) -> None:
        if path != self.calibration_data:
            self.calibration_data = path
            self.data_changed.emit()

    def set_result(self, result: Comparison | None) -> None:
        if result is not self.result:
            self.result = result
            self.result_changed.emit(result)

    def set_retrained(self, result: FinetuneResult | None) -> None:
        """The retraining result of the current model and recipe (None: there is none)."""
        if result is not self.retrained:
            self.retrained = result
            self.retrained_changed.emit(result)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False
