"""`AutoDialog` (Recipe → Automatic Recipe…): a recipe within an accuracy budget, chosen and verified by core.

The work is core's `iter_auto_recipe`, run by the window's `Analysis` in its own child process: per-layer
sensitivities first, then a few optimize-and-evaluate verifications. Each verified candidate becomes a
point in the History tab (a diamond) as it arrives; the result is the best verified candidate, and Apply
makes it the recipe as one undoable edit (the live comparison then evaluates it as after any edit).
The dialog is not modal, so the history can be watched while it runs. Tests drive it without `exec()`:
set the budget and goal, call `run()`, wait for `result`, call `apply()`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFormLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from slimscope.core.auto_recipe import AutoResult, Candidate, Goal
from slimscope.core.comparison import COMPARISON_SAMPLES, Comparison
from slimscope.core.inspection_table import human_bytes
from slimscope.core.tasks import Progress
from slimscope.gui.analysis import AUTO

if TYPE_CHECKING:
    from slimscope.gui.main_window import MainWindow

DEFAULT_BUDGET_PT = 1.0
GOALS: tuple[tuple[str, Goal, str], ...] = (  # the first is the default
    ("Balanced", "both", "Bytes and time weighed together; never slower than the original model"),
    (
        "Smallest file",
        "size",
        "Fewest bytes: int8 or int4 weights and pruned channels where they cost little. int4 weights run "
        "dequantized and can make the model slower; the result says so when they do",
    ),
    ("Fastest", "latency", "Least time per inference: int8 and pruned channels on the layers with most work"),
)


def edit_text(result: AutoResult) -> str:
    """The undo entry's text: "Automatic recipe (≤ 1.0 pt, size)"."""
    return f"Automatic recipe (≤ {100 * result.budget:.1f} pt, {result.goal})"


def chosen_candidate(result: AutoResult) -> Candidate | None:
    return next((c for c in result.candidates if c.recipe == result.recipe and c.within_budget), None)


def speed_text(original_ms: float, optimized_ms: float) -> str:
    """Either "1.72× faster" or "2.97× slower" (int4 weights, dequantized as they run, can be slower)."""
    if optimized_ms <= original_ms:
        return f"{original_ms / max(optimized_ms, 1e-12):.2f}× faster"
    return f"{optimized_ms / original_ms:.2f}× slower"


def result_text(result: AutoResult) -> str:
    """What was chosen and what it costs and gains, against the original model, plus core's notes; when
    nothing met the budget, which candidate came closest (and nothing is applied)."""
    chosen = chosen_candidate(result)
    lines = []
    if not result.met:
        lines.append(result.shortfall_text() + " Nothing was applied.")
    if chosen is not None and result.comparison is not None:
        report = result.comparison.report
        original = report.size_bytes["original"]
        limits = result.limits
        lines.append(
            f"Drop {limits.drop_text(chosen.drop)} (budget: {limits.text()}), "
            f"{len(result.recipe.layers)} layer settings."
        )
        lines.append(
            f"Size {human_bytes(chosen.size_bytes)} (original {human_bytes(original)}, "
            f"{original / max(chosen.size_bytes, 1):.1f}× smaller)."
        )
        if chosen.latency_ms is not None:
            base = report.latency_ms[0].original.median_ms if report.latency_ms else None
            speed = "" if not base else f", original {base:.3g} ms, {speed_text(base, chosen.latency_ms)}"
            lines.append(f"Latency {chosen.latency_ms:.3g} ms at 1 thread{speed}.")
    verified = len(result.candidates)
    lines.append(
        f"{verified} candidate{'s' if verified != 1 else ''} verified (diamonds in the History tab)."
    )
    lines.extend(result.notes)
    return "\n".join(lines)


class AutoDialog(QDialog):
    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.setWindowTitle("Automatic Recipe")
        self.main_window = window
        self.analysis = window.analysis
        self.result: AutoResult | None = None
        self.max_samples = COMPARISON_SAMPLES  # as the live comparison: the history's points compare
        self.candidates = 0  # verified in the current run
        self._running = False  # this dialog started the analysis' current job and has not seen it end
        self.budget = QDoubleSpinBox(minimum=0.0, maximum=50.0, singleStep=0.1, decimals=2, suffix=" pt")
        self.budget.setValue(DEFAULT_BUDGET_PT)
        self.budget.setToolTip(
            "The most the optimized model may lose, in percentage points of top-1 accuracy (labelled "
            "data) or of top-1 agreement with the original model (unlabelled data), counted in whole "
            "evaluation samples: a budget below one sample is rounded up to one, and the result says so"
        )
        self.goal = QComboBox()
        for index, (label, goal, tip) in enumerate(GOALS):
            self.goal.addItem(label, goal)
            self.goal.setItemData(index, tip, Qt.ItemDataRole.ToolTipRole)
        self.goal.setToolTip("What the recipe should gain within the budget")
        self.progress = QProgressBar(textVisible=True)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.result_label = QLabel()
        self.result_label.setWordWrap(True)
        self.run_button = QPushButton("Run")
        self.run_button.setToolTip("Measure the layers' sensitivities, then choose and verify a recipe")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the search (candidates verified so far stay in the history)")
        self.apply_button = QPushButton("Apply")
        self.apply_button.setToolTip("Make the result the recipe (one undoable edit)")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        for button in (self.run_button, self.cancel_button, self.apply_button):
            buttons.addButton(button, QDialogButtonBox.ButtonRole.ActionRole)
        form = QFormLayout()
        form.addRow("Largest drop:", self.budget)
        form.addRow("Goal:", self.goal)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.result_label)
        layout.addWidget(buttons)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.apply_button.clicked.connect(self.apply)
        buttons.rejected.connect(self.reject)
        self.analysis.progressed.connect(self._on_progress)
        self.analysis.candidate_verified.connect(self._on_candidate)
        self.analysis.auto_finished.connect(self._on_finished)
        self.analysis.running_changed.connect(self._on_running)
        self.analysis.failed.connect(self._on_failed)
        window.session.model_changed.connect(self.reset)
        window.session.data_changed.connect(self.reset)
        self.reset()

    @property
    def running(self) -> bool:
        return self.analysis.running and self.analysis.job == AUTO

    def chosen_goal(self) -> Goal:
        return self.goal.currentData()

    def run(self) -> None:
        """Start the search with the budget and goal shown (a running sweep or search is replaced)."""
        if not self.analysis.run_auto(self.budget.value() / 100, self.chosen_goal(), self.max_samples):
            return
        self._running = True
        self.result, self.candidates = None, 0
        self.result_label.clear()
        self.progress.setRange(0, 0)
        self.status.setText("Measuring each layer's sensitivity…")
        self._sync_controls()

    def cancel(self) -> None:
        if self.running:
            self.analysis.cancel()

    def apply(self) -> None:
        """Make the result the window's recipe: one undoable edit."""
        result = self.result
        if result is None or result.comparison is None:
            return
        self.main_window.push_recipe(result.recipe, edit_text(result))
        self.status.setText("Applied; the comparison re-evaluates it. Edit → Undo goes back.")

    def reset(self, *_args: object) -> None:
        """No result (a new model or data: a result for the old one must not be applied)."""
        self._running, self.result, self.candidates = False, None, 0
        self.result_label.clear()
        self.progress.reset()
        self.status.setText(
            "" if self.analysis.ready else "Open a model and choose evaluation data (Data menu) first."
        )
        self._sync_controls()

    def reject(self) -> None:
        """Closing the dialog stops its search."""
        self.cancel()
        super().reject()

    def _sync_controls(self, *_args: object) -> None:
        running = self.running
        self.run_button.setEnabled(self.analysis.ready and not running)
        self.cancel_button.setEnabled(running)
        self.apply_button.setEnabled(self.result is not None and self.result.comparison is not None)
        self.budget.setEnabled(not running)
        self.goal.setEnabled(not running)

    def _on_progress(self, job: str, progress: Progress) -> None:
        if job != AUTO or not self._running:
            return
        if progress.fraction is None:
            self.progress.setRange(0, 0)
        else:
            self.progress.setRange(0, 1000)
            self.progress.setValue(round(progress.fraction * 1000))
        self.status.setText(progress.message)

    def _on_candidate(self, comparison: Comparison) -> None:
        if self._running:
            self.candidates += 1
            self.main_window.history.add_candidate(comparison)

    def _on_finished(self, result: AutoResult) -> None:
        if not self._running:
            return
        self.result = result
        self.progress.setRange(0, 1)
        self.progress.setValue(1)
        found = result.comparison is not None
        self.status.setText("Done: Apply makes it the recipe." if found else "Done: nothing met the budget.")
        self.result_label.setText(result_text(result))
        self.adjustSize()  # room for the result's lines
        self._sync_controls()

    def _on_running(self, _running: bool) -> None:
        if self._running and not self.running:  # ended: finished, cancelled, replaced or failed
            self._running = False
            if self.result is None:
                self.progress.setRange(0, 1)
                self.progress.setValue(0)
                kept = f"; {self.candidates} candidates in the history" if self.candidates else ""
                self.status.setText(f"Stopped{kept}.")
        self._sync_controls()

    def _on_failed(self, job: str, _exc: object) -> None:
        if job == AUTO and self._running:
            self._running = False  # the error itself goes to the window's error funnel
            self.status.setText("The search failed.")
            self.progress.setRange(0, 1)
            self.progress.setValue(0)


def open_auto_dialog(window: MainWindow) -> AutoDialog:
    """Show the window's automatic-recipe dialog (one per window, kept with its last result)."""
    dialog = window.findChild(AutoDialog)
    if dialog is None:
        dialog = AutoDialog(window)
    dialog.show()
    dialog.raise_()
    dialog.activateWindow()
    return dialog
