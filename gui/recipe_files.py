"""File commands on the Session: save and load recipes, export the optimized model with its report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QFileDialog, QMessageBox

from slimscope.core.export import export_model, write_json
from slimscope.core.recipe_files import load_recipe, save_recipe
from slimscope.core.user_files import CommandFiles
from slimscope.gui import errors, settings

if TYPE_CHECKING:
    from slimscope.gui.main_window import MainWindow

RECIPE_FILTER = "Recipes (*.json);;All files (*)"
ONNX_FILTER = "ONNX models (*.onnx);;All files (*)"
REPORT_SUFFIX = ".report.json"


def report_path(model_path: Path) -> Path:
    """Where the report of an exported model goes: beside it, same stem + '.report.json'."""
    return model_path.with_name(model_path.stem + REPORT_SUFFIX)


def save_recipe_as(window: MainWindow, path: Path | None = None) -> None:
    recipe = window.session.recipe
    if recipe is None:
        return
    if path is None:
        chosen, _ = QFileDialog.getSaveFileName(window, "Save recipe", settings.last_folder(), RECIPE_FILTER)
        if not chosen:
            return
        path = Path(chosen)
    try:
        _files_read(window.session).destination(path, "the recipe")  # never over the model or the data
        save_recipe(recipe, path)
    except Exception as exc:  # noqa: BLE001 (every error goes to the funnel)
        errors.show_error(window, exc)
        return
    window.statusBar().showMessage(f"Recipe saved to {path}", 5000)


def _files_read(session) -> CommandFiles:
    """What the window has open: written files never go over them (core/user_files.py)."""
    files = CommandFiles()
    if session.loaded is not None:
        files.reads_model(session.loaded, "the open model")
    files.reads(session.evaluation_data, "the evaluation data")
    return files.reads(session.calibration_data, "the calibration data")


def load_recipe_from(window: MainWindow, path: Path | None = None) -> None:
    session = window.session
    if session.recipe is None:
        return
    if path is None:
        chosen, _ = QFileDialog.getOpenFileName(window, "Load recipe", settings.last_folder(), RECIPE_FILTER)
        if not chosen:
            return
        path = Path(chosen)
    try:
        recipe = load_recipe(path)
        recipe.check_layers(session.layer_names)
    except Exception as exc:  # noqa: BLE001
        errors.show_error(window, exc)
        return
    window.push_recipe(recipe, f"Load recipe {Path(path).name}")
    window.statusBar().showMessage(f"Recipe loaded from {path}", 5000)


def export_optimized(window: MainWindow, path: Path | None = None) -> None:
    """Write the latest optimized model (made with the current recipe) and its report beside it."""
    session = window.session
    loaded, result = session.loaded, session.result
    if loaded is None or result is None or not session.result_is_current:
        window.statusBar().showMessage("Nothing to export yet: wait for the comparison to finish.", 5000)
        return
    asked = path is None  # chosen in a dialog: the user is there to be offered the folder afterwards
    if path is None:
        suggested = str(Path(settings.last_folder()) / f"{loaded.source.stem}.slim.onnx")
        chosen, _ = QFileDialog.getSaveFileName(window, "Export optimized ONNX", suggested, ONNX_FILTER)
        if not chosen:
            return
        path = Path(chosen)
    protected = [loaded.source, *loaded.external_files]
    report = {"source": str(loaded.source), "output": str(path), **result.report.to_dict(),
              "notes": result.optimized.notes, "forms": result.optimized.forms}  # fmt: skip
    metadata = {
        "slimscope.recipe": json.dumps(result.recipe.to_dict()),
        "slimscope.report": json.dumps(report),
    }
    try:
        files = _files_read(session)
        files.destination(path, "the optimized model", model=True)
        files.destination(report_path(path), "the report")
        export_model(result.optimized.model, path, protected=protected, metadata=metadata)
        write_json(report, report_path(path))
    except Exception as exc:  # noqa: BLE001
        errors.show_error(window, exc)
        return
    window.statusBar().showMessage(f"Exported {path.name} and {report_path(path).name}", 8000)
    if asked:
        offer_to_show(window, path)


def offer_to_show(window: MainWindow, path: Path) -> None:
    """ "Exported" with a button that opens the file's folder in the system's file manager."""
    box = QMessageBox(QMessageBox.Icon.Information, "Exported", f"Wrote {path.name} and {report_path(path).name}.",
                      QMessageBox.StandardButton.Ok, window)  # fmt: skip
    box.setInformativeText(str(path.parent))
    show = box.addButton("Show in Folder", QMessageBox.ButtonRole.ActionRole)
    box.exec()
    if box.clickedButton() is show:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(path.parent)))
