"""`MainWindow`: assembles the layer table, histogram and heatmap panels, menus and the status bar."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import (
    QCloseEvent,
    QDesktopServices,
    QDragEnterEvent,
    QDropEvent,
    QGuiApplication,
    QUndoStack,
)
from PySide6.QtWidgets import QFileDialog, QFrame, QMainWindow, QScrollArea, QSplitter, QTabWidget

from slimscope.core.evaluate import RunningMetrics
from slimscope.core.inspection import ModelReport
from slimscope.core.loading import MODEL_FILE_SUFFIXES
from slimscope.core.netron_view import NetronView
from slimscope.core.recipe import Recipe
from slimscope.core.session import Session
from slimscope.core.task_process import TaskProcess
from slimscope.core.tasks import Progress
from slimscope.gui import actions, errors, input_shape_prompt, input_size, settings, theme
from slimscope.gui.analysis import Analysis
from slimscope.gui.live_comparison import LiveComparison
from slimscope.gui.panels.comparison_panel import ComparisonPanel
from slimscope.gui.panels.heatmap_panel import HeatmapPanel
from slimscope.gui.panels.histogram_panel import HistogramPanel
from slimscope.gui.panels.history_panel import HistoryPanel
from slimscope.gui.panels.job_progress import JobProgress
from slimscope.gui.panels.layer_error_panel import LayerErrorPanel
from slimscope.gui.panels.layer_table import LayerTablePanel
from slimscope.gui.panels.overview_panel import OverviewPanel
from slimscope.gui.panels.sensitivity_panel import SensitivityPanel
from slimscope.gui.panels.settings_panel import SettingsPanel
from slimscope.gui.trust_prompt import ask_to_trust, can_run_code
from slimscope.gui.undo import RecipeEdit
from slimscope.gui.workers import ModelOpener

MODEL_FILE_FILTER = "Models ({});;All files (*)".format(" ".join(f"*{s}" for s in MODEL_FILE_SUFFIXES))


class MainWindow(QMainWindow):
    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("Slimscope")
        theme.apply_theme(settings.theme())  # before the panels: plots take their colours when made
        self.setAcceptDrops(True)
        self.report: ModelReport | None = None  # the open model; kept when opening another one fails
        self.model_path: Path | None = None
        self.session = Session()
        self.undo_stack = QUndoStack(self)
        # One child process does the heavy work (opening, optimizing, evaluating): the window's interpreter
        # is never held by it, a native crash there is an error message, and the child keeps the model.
        self.worker_process = TaskProcess("slimscope-worker")
        self.live = LiveComparison(self.session, self.worker_process, self)
        self.analysis = Analysis(self.session, self)  # sweeps and automatic recipes: a process of their own
        self.netron = NetronView()  # at most one graph served; stopped when the model changes or on quit

        self.layer_table = LayerTablePanel(self.session)
        self.histogram = HistogramPanel()
        self.heatmap = HeatmapPanel()
        self.settings_panel = SettingsPanel(self.session)
        self.comparison = ComparisonPanel(self.session)
        self.setCentralWidget(self._assemble())

        self.job_progress = JobProgress()
        self.statusBar().addPermanentWidget(self.job_progress)
        self.opener = ModelOpener(self.worker_process, self)
        self.opener.progressed.connect(self._on_progress)
        self.opener.opened.connect(self._on_opened)
        self.opener.failed.connect(self._on_failed)
        self.opener.shape_needed.connect(partial(input_shape_prompt.retry_with_input_shape, self))
        self.opener.running_changed.connect(self.job_progress.set_running)
        self.opener.running_changed.connect(self._on_opening)
        self.job_progress.cancel_button.clicked.connect(self.cancel_job)
        self.shown_layer: str | None = None
        self.layer_table.layer_selected.connect(self.show_layer)
        self.histogram.threshold_dragged.connect(self.set_threshold)
        self.settings_panel.suggest_threshold = lambda: self.histogram.threshold
        self.session.result_changed.connect(self._refresh_layer)
        self.session.recipe_changed.connect(self._refresh_layer)
        self.layer_table.selection_changed.connect(self.settings_panel.set_selected_layers)
        self.settings_panel.edit_requested.connect(self.push_recipe)
        self.live.progressed.connect(self._on_comparison_progress)
        self.live.failed.connect(self._on_comparison_failed)
        self.analysis.failed.connect(lambda _job, exc: errors.show_error(self, exc))
        self.session.data_changed.connect(self.update_actions)
        self.undo_stack.cleanChanged.connect(self.update_actions)
        self.undo_stack.indexChanged.connect(self.update_actions)
        self.session.result_changed.connect(self.update_actions)
        self.session.recipe_changed.connect(self.update_actions)
        self.session.model_changed.connect(self.stop_netron)
        self.session.result_changed.connect(partial(input_size.follow_data, self))  # MACs at the data's size
        QGuiApplication.styleHints().colorSchemeChanged.connect(self.follow_system_scheme)

        self.actions_by_key = actions.build_actions(self)
        self.addActions(list(self.actions_by_key.values()))
        self.recent_menu = actions.build_menus(self, self.actions_by_key)
        self.update_actions()
        self.resize(1500, 800)
        settings.restore_layout(self, self.splitters)  # the user's last geometry and splitter sizes

    def _assemble(self) -> QSplitter:
        plots = QSplitter(Qt.Orientation.Vertical)
        plots.addWidget(self.histogram)
        plots.addWidget(self.heatmap)
        # The middle column: one tab per view (the selected layer's weights, whole-model charts, history).
        self.views = QTabWidget(documentMode=True)
        self.views.addTab(plots, "Weights")
        self.views.setTabToolTip(0, "The selected layer's weight histogram and sparsity heatmap")
        self.overview, self.layer_errors = OverviewPanel(self.session), LayerErrorPanel(self.session)
        tip = "Parameters, MACs or weight bytes of every layer; click a bar to select its layer"
        self.views.setTabToolTip(self.views.addTab(self.overview, "Model"), tip)
        tip = "Per-layer SQNR of the latest comparison, worst first; click a bar to select its layer"
        self.views.setTabToolTip(self.views.addTab(self.layer_errors, "Layer error"), tip)
        self.sensitivity = SensitivityPanel(self.session, self.analysis)
        tip = "How much each layer alone costs when quantized or pruned, most sensitive first"
        self.views.setTabToolTip(self.views.addTab(self.sensitivity, "Sensitivity"), tip)
        self.sensitivity.rows_shown.connect(self.layer_table.set_sensitivity)
        for chart in (self.overview, self.layer_errors, self.sensitivity):
            chart.layer_clicked.connect(self.layer_table.select_layer)
        self.history = HistoryPanel(self.session)
        tip = "Every recipe evaluated, quality vs latency and size; click a point to go back to its recipe"
        self.views.setTabToolTip(self.views.addTab(self.history, "History"), tip)
        go_back = "Go back to a recipe from the history"
        self.history.recipe_requested.connect(lambda recipe: self.push_recipe(recipe, go_back))
        tuning = QSplitter(Qt.Orientation.Vertical)
        # The settings scroll, so the comparison below keeps the room its numbers need.
        settings_scroll = QScrollArea(widgetResizable=True, frameShape=QFrame.Shape.NoFrame)
        settings_scroll.setWidget(self.settings_panel)
        tuning.addWidget(settings_scroll)
        tuning.addWidget(self.comparison)
        tuning.setSizes([440, 360])
        splitter = QSplitter(Qt.Orientation.Horizontal)
        for widget in (self.layer_table, self.views, tuning):
            splitter.addWidget(widget)
        splitter.setSizes([590, 490, 420])  # the table's number columns; two sparsity maps; the numbers
        self.splitters = {"main": splitter, "plots": plots, "tuning": tuning}
        return splitter

    # ------------------------------------------------------------------ commands

    def choose_model_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a model", settings.last_folder(), MODEL_FILE_FILTER)
        if path:
            settings.set_last_folder(Path(path).parent)
            self.open_model(Path(path))

    def open_model(
        self, path: Path, *, trust: bool = False, input_shapes: list[tuple[int, ...]] | None = None
    ) -> None:
        """Open `path` in the background; files that can run code are opened only if the user trusts them.
        A file without a known input shape makes the opener ask for one (`input_shape_prompt`)."""
        path = Path(path)
        if not trust and can_run_code(path):
            trust = ask_to_trust(self, path)
            if not trust:
                return
        self.statusBar().showMessage(f"Opening {path.name}…")
        self.opener.open(path, trust=trust, input_shapes=input_shapes)

    def cancel_job(self) -> None:
        self.opener.cancel()
        self.statusBar().showMessage("Cancelled.", 3000)

    def show_layer(self, name: str) -> None:
        """The layer's weights, with the latest comparison's optimized weights and prune threshold."""
        self.shown_layer = name
        if self.report is None or name not in self.report.stats:
            self.histogram.clear()
            self.heatmap.clear()
            return
        stats = self.report.stats[name]
        result = self.session.result
        view = None if result is None else result.views.get(name)
        self.histogram.show_stats(name, stats, None if view is None else view.stats, self._threshold(name))
        self.heatmap.show_stats(name, stats, None if view is None else view.stats)

    def _threshold(self, name: str) -> float | None:
        """The recipe's threshold for the layer, or the magnitude its sparsity cut at in the latest
        comparison of the current recipe; None when the layer is not pruned elementwise."""
        recipe, result = self.session.recipe, self.session.result
        prune = None if recipe is None else recipe.settings_for(name).prune
        if prune is None or prune.structure == "channel":
            return None
        if prune.threshold is not None:
            return prune.threshold
        view = result.views.get(name) if result is not None and self.session.result_is_current else None
        return None if view is None else view.threshold

    def _refresh_layer(self, *_args: object) -> None:
        if self.shown_layer is not None:
            self.show_layer(self.shown_layer)

    def set_threshold(self, threshold: float) -> None:
        """Prune the selected layers (or the shown one) below this magnitude: one undoable edit."""
        names = self.layer_table.selected_names() or ([self.shown_layer] if self.shown_layer else [])
        recipe = self.session.recipe
        if recipe is None or not names:
            return
        spec = {"structure": "unstructured", "threshold": float(threshold), "scope": "layer"}
        for name in names:
            recipe = recipe.with_layer(name, prune=spec)
        where = names[0] if len(names) == 1 else f"{len(names)} layers"
        self.push_recipe(recipe, f"Prune threshold {threshold:.3g} ({where})")

    def push_recipe(self, recipe: Recipe, text: str, merge_key: str = "") -> None:
        """An undoable recipe edit (it is applied at once)."""
        if recipe != self.session.recipe:
            self.undo_stack.push(RecipeEdit(self.session, recipe, text, merge_key))

    def show_in_netron(self, *, optimized: bool) -> None:
        """Serve the open model (as loaded: normalized, weights included) or the current optimized one, on
        loopback from a private temporary folder, and open Netron's page in the web browser."""
        loaded, result = self.session.loaded, self.session.result
        if loaded is None or (optimized and not self.session.result_is_current):
            return
        stem = Path(loaded.source).stem
        try:
            if optimized:
                assert result is not None
                url = self.netron.show(result.optimized.model, f"{stem}.optimized.onnx")
            else:
                url = self.netron.show(loaded.model, f"{stem}.onnx")
        except Exception as exc:  # noqa: BLE001 - a failed server or write goes to the error funnel
            errors.show_error(self, exc)
            return
        QDesktopServices.openUrl(QUrl(url))
        self.statusBar().showMessage(f"Netron is showing the graph at {url} (until the model changes)")

    def stop_netron(self, *_args: object) -> None:
        self.netron.stop()

    def update_actions(self, *_args: object) -> None:
        actions.update_actions(self)

    def set_theme(self, choice: str) -> None:
        """View → Theme: remember "system", "light" or "dark" and apply it now."""
        settings.set_theme(choice)
        theme.apply_theme(choice)
        self.update_actions()

    def follow_system_scheme(self, scheme: Qt.ColorScheme) -> None:
        """The system switched between light and dark: follow it if the theme is "system"."""
        if settings.theme() == "system":
            theme.apply_theme("system", system=scheme)

    # ------------------------------------------------------------------ job results (main thread)

    def _on_progress(self, progress: Progress) -> None:
        self.job_progress.show_progress(progress)
        self.statusBar().showMessage(progress.message)

    def _on_opened(self, path: Path, report: ModelReport) -> None:
        self.report, self.model_path = report, Path(path)
        self.setWindowTitle(f"{Path(path).name} — Slimscope")
        self.undo_stack.clear()
        self.session.set_model(report)
        self.layer_table.set_report(report)
        input_size.restore_input_size(self)  # the size the user gave this model before, if it leaves it open
        settings.add_recent_file(Path(path))
        self.update_actions()
        self.statusBar().showMessage(f"{Path(path).name}: {len(report.layers)} layers", 5000)

    def _on_opening(self, running: bool) -> None:
        """Comparisons wait while a model is being opened in the shared process."""
        if running:
            self.live.pause()
        else:
            self.live.resume()

    def _on_comparison_progress(self, progress: Progress) -> None:
        if isinstance(progress.partial, RunningMetrics):
            self.comparison.show_running(progress.partial)
        else:
            self.comparison.status.setText(progress.message)

    def _on_comparison_failed(self, exc: BaseException) -> None:
        # the panel must not keep saying what the failed job was doing ("Preparing the model…") forever
        self.comparison.status.setText("The comparison failed (see the message); edit the recipe or choose "
                                       "other data to compare again.")  # fmt: skip
        errors.show_error(self, exc)

    def _on_failed(self, exc: BaseException) -> None:
        self.statusBar().clearMessage()
        errors.show_error(self, exc)

    # ------------------------------------------------------------------ window events

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if any(url.isLocalFile() for url in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        files = [Path(url.toLocalFile()) for url in event.mimeData().urls() if url.isLocalFile()]
        if files:
            event.acceptProposedAction()
            self.open_model(files[0])

    def closeEvent(self, event: QCloseEvent) -> None:
        settings.save_layout(self, self.splitters)
        self.opener.cancel()
        self.live.shutdown()
        self.analysis.shutdown()
        self.stop_netron()
        super().closeEvent(event)
