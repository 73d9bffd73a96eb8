"""Every action as data (key, text, shortcut, tooltip, callback), and the menus built from them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QMenu, QMessageBox

from slimscope.core.loading.input_shapes import leaves_size_open
from slimscope.core.recipe_presets import PRESETS, apply_preset
from slimscope.gui import auto_dialog, data_dialog, input_size, recipe_files, retrain_dialog, settings

if TYPE_CHECKING:
    from slimscope.gui.main_window import MainWindow

Shortcut = QKeySequence.StandardKey | str | None


@dataclass(frozen=True)
class ActionSpec:
    key: str
    text: str
    shortcut: Shortcut
    tooltip: str
    callback: Callable[[MainWindow], object]
    checkable: bool = False


ACTIONS = (
    ActionSpec("open", "&Open…", QKeySequence.StandardKey.Open, "Open an ONNX, TorchScript or .pt2 model",
               lambda w: w.choose_model_file()),
    ActionSpec("export", "&Export Optimized ONNX…", "Ctrl+E",
               "Write the optimized model and its report (the latest comparison's result)",
               lambda w: recipe_files.export_optimized(w)),
    ActionSpec("undo", "&Undo", QKeySequence.StandardKey.Undo, "Undo the last recipe edit",
               lambda w: w.undo_stack.undo()),
    ActionSpec("redo", "&Redo", QKeySequence.StandardKey.Redo, "Redo the recipe edit undone last",
               lambda w: w.undo_stack.redo()),
    ActionSpec("save_recipe", "&Save Recipe…", QKeySequence.StandardKey.Save,
               "Save the recipe as JSON (the format `slimscope optimize --recipe` reads)",
               lambda w: recipe_files.save_recipe_as(w)),
    ActionSpec("load_recipe", "&Load Recipe…", None, "Replace the recipe by one read from a JSON file",
               lambda w: recipe_files.load_recipe_from(w)),
    ActionSpec("auto_recipe", "&Automatic Recipe…", "Ctrl+Shift+A",
               "Choose per-layer bits and channel pruning within an accuracy budget, verified on the "
               "evaluation data",
               lambda w: auto_dialog.open_auto_dialog(w)),
    ActionSpec("retrain", "&Retrain…", "Ctrl+Shift+R",
               "Recover the accuracy the recipe costs: prune gradually while fine-tuning on labelled training "
               "data, then quantization-aware training; watch it live and export the retrained model",
               lambda w: retrain_dialog.open_retrain_dialog(w)),
    ActionSpec("choose_data", "Choose &Evaluation Data…", "Ctrl+D",
               "Choose the evaluation and calibration data (.npz or a folder of images) and their preprocessing",
               lambda w: data_dialog.choose_data(w)),
    ActionSpec("input_size", "&Input Size…", None,
               "Give the input size of a model that leaves it open (free height or width), to count every "
               "layer's MACs at it; remembered for this model",
               lambda w: input_size.choose_input_size(w)),
    ActionSpec("clear_recent", "Clear Recent Files", None, "Forget the recently opened files",
               lambda w: (settings.clear_recent_files(), w.update_actions())),
    ActionSpec("netron", "Open &Graph in Netron", None,
               "Show the open model's graph in Netron, in your web browser (served on this computer only)",
               lambda w: w.show_in_netron(optimized=False)),
    ActionSpec("netron_optimized", "Open &Optimized Model in Netron", None,
               "Show the latest comparison's optimized model in Netron, in your web browser",
               lambda w: w.show_in_netron(optimized=True)),
    ActionSpec("theme_system", "&System", None,
               "Light or dark as the system is set, switching when the system switches",
               lambda w: w.set_theme("system"), checkable=True),
    ActionSpec("theme_light", "&Light", None, "Dark text on light backgrounds, whatever the system's setting",
               lambda w: w.set_theme("light"), checkable=True),
    ActionSpec("theme_dark", "&Dark", None, "Light text on dark backgrounds, whatever the system's setting",
               lambda w: w.set_theme("dark"), checkable=True),
    *(ActionSpec(f"preset_{name}", name, None, preset.summary, lambda w, n=name: apply_preset_to(w, n))
      for name, preset in PRESETS.items()),
    ActionSpec("quit", "&Quit", QKeySequence.StandardKey.Quit, "Close Slimscope", lambda w: w.close()),
    ActionSpec("about", "&About Slimscope", None, "Versions of Slimscope and the libraries it uses",
               lambda w: show_about(w)),
)  # fmt: skip

ABOUT_PACKAGES = ("slimscope", "onnx", "onnxruntime", "torch", "PySide6-Essentials", "pyqtgraph")


def build_actions(window: MainWindow) -> dict[str, QAction]:
    actions = {}
    for spec in ACTIONS:
        action = QAction(spec.text, window, toolTip=spec.tooltip, statusTip=spec.tooltip)
        action.setCheckable(spec.checkable)
        if spec.shortcut is not None:
            action.setShortcut(QKeySequence(spec.shortcut))
        action.triggered.connect(partial(_trigger, spec.callback, window))
        actions[spec.key] = action
    return actions


def _trigger(callback: Callable[[MainWindow], object], window: MainWindow, _checked: bool = False) -> None:
    callback(window)


# The menus as data: action keys in order; None is a separator, RECENT the Open Recent submenu, THEME the
# Theme submenu (its actions exclusive: one is checked, the theme in the settings).
RECENT = "recent"
THEME = "theme"
PRESETS_MENU = "presets"  # Recipe → Presets: one action per preset of core/recipe_presets.py
THEME_ACTIONS = ("theme_system", "theme_light", "theme_dark")
MENUS: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    ("&File", ("open", RECENT, None, "export", None, "quit")),
    ("&Edit", ("undo", "redo")),
    ("&Recipe", (PRESETS_MENU, None, "save_recipe", "load_recipe", None, "auto_recipe", "retrain")),
    ("&Data", ("choose_data", "input_size")),
    ("&View", ("netron", "netron_optimized", None, THEME)),
    ("&Help", ("about",)),
)


def build_menus(window: MainWindow, actions: dict[str, QAction]) -> QMenu:
    """The menus of `MENUS`; returns the Open Recent submenu (refilled by `fill_recent_menu`)."""
    recent_menu = None
    for title, entries in MENUS:
        menu = window.menuBar().addMenu(title)
        for key in entries:
            if key is None:
                menu.addSeparator()
            elif key == RECENT:
                recent_menu = menu.addMenu("Open &Recent")
            elif key == THEME:
                _add_theme_menu(menu, window, actions)
            elif key == PRESETS_MENU:
                submenu = menu.addMenu("&Presets")
                submenu.setToolTipsVisible(True)
                submenu.addActions([actions[f"preset_{name}"] for name in PRESETS])
            else:
                menu.addAction(actions[key])
    assert recent_menu is not None
    return recent_menu


def _add_theme_menu(menu: QMenu, window: MainWindow, actions: dict[str, QAction]) -> None:
    submenu = menu.addMenu("&Theme")
    submenu.setToolTipsVisible(True)
    group = QActionGroup(window, exclusive=True)
    for key in THEME_ACTIONS:
        group.addAction(actions[key])
        submenu.addAction(actions[key])


def update_actions(window: MainWindow) -> None:
    """Enabled states from the Session and the undo stack."""
    actions, session, stack = window.actions_by_key, window.session, window.undo_stack
    actions["undo"].setEnabled(stack.canUndo())
    actions["undo"].setText(f"&Undo {stack.undoText()}".rstrip())
    actions["redo"].setEnabled(stack.canRedo())
    actions["redo"].setText(f"&Redo {stack.redoText()}".rstrip())
    actions["save_recipe"].setEnabled(session.recipe is not None)
    actions["load_recipe"].setEnabled(session.recipe is not None)
    for name in PRESETS:
        actions[f"preset_{name}"].setEnabled(session.recipe is not None)
    actions["export"].setEnabled(session.result_is_current)
    actions["netron"].setEnabled(session.loaded is not None)
    actions["choose_data"].setEnabled(session.loaded is not None)
    loaded = session.loaded
    actions["input_size"].setEnabled(loaded is not None and leaves_size_open(loaded.input_shapes))
    actions["auto_recipe"].setEnabled(session.loaded is not None and session.evaluation_data is not None)
    actions["netron_optimized"].setEnabled(session.result_is_current)
    actions["retrain"].setEnabled(session.loaded is not None)
    actions[f"theme_{settings.theme()}"].setChecked(True)
    fill_recent_menu(window.recent_menu, window, actions["clear_recent"])


def apply_preset_to(window: MainWindow, name: str) -> None:
    """Replace the recipe by a preset (its data and training sections stay): one undoable edit."""
    if window.session.recipe is not None:
        window.push_recipe(apply_preset(window.session.recipe, name), f"Preset {name}")


def fill_recent_menu(menu: QMenu, window: MainWindow, clear_action: QAction) -> None:
    menu.clear()
    paths = settings.recent_files()
    for path in paths:
        action = menu.addAction(path.name)
        action.setToolTip(str(path))
        action.setStatusTip(str(path))
        action.triggered.connect(partial(_open_recent, window, path))
    menu.addSeparator()
    menu.addAction(clear_action)
    menu.setEnabled(bool(paths))


def _open_recent(window: MainWindow, path: Path, _checked: bool = False) -> None:
    window.open_model(path)


def library_versions() -> dict[str, str]:
    versions = {}
    for name in ABOUT_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def show_about(window: MainWindow) -> None:
    lines = "".join(f"<tr><td>{name}</td><td>{v}</td></tr>" for name, v in library_versions().items())
    QMessageBox.about(
        window,
        "About Slimscope",
        "<p>Slimscope: see inside a vision model and make it smaller and faster.</p>"
        f"<table cellspacing='6'>{lines}</table>",
    )
