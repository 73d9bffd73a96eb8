"""Take the README's screenshots of the main window on the demo model (run under a display, e.g.
`xvfb-run -s "-screen 0 1600x1000x24" .venv/bin/python docs/screenshots/take_screenshots.py`; add
`--retrain-only` for the Retrain dialog's alone)."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

HERE = Path(__file__).resolve().parent


def wait_until(app: QApplication, done, timeout_s: float = 120) -> None:
    start = time.monotonic()
    while not done():
        app.processEvents()
        time.sleep(0.01)
        if time.monotonic() - start > timeout_s:
            raise TimeoutError("the window did not finish in time")


def settle(app: QApplication, seconds: float = 0.5) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def take_retrain(app: QApplication, window) -> None:
    """Recipe → Retrain… after a short run: 70 % of the weights pruned (ranked globally) with int8 costs the
    demo about a third of its accuracy without retraining; three pruning steps and one QAT epoch win it
    back."""
    from slimscope.core.recipe import PruneSpec, QuantSpec
    from slimscope.core.train.train_spec import QatSettings, TrainSpec
    from slimscope.gui.retrain_dialog import open_retrain_dialog

    session = window.session
    recipe = session.recipe.with_defaults(prune=PruneSpec(sparsity=0.7, scope="global"), quantize=QuantSpec())
    spec = TrainSpec(steps=3, epochs_per_step=1, final_epochs=2, batch_size=32, max_batches_per_epoch=40,
                     qat=QatSettings(epochs=1))  # fmt: skip
    window.push_recipe(recipe.with_training(spec), "Screenshot recipe")
    dialog = open_retrain_dialog(window)
    dialog.resize(1400, 900)
    dialog.start()
    wait_until(app, lambda: dialog.result is not None, timeout_s=600)
    settle(app, 1.0)
    dialog.grab().save(str(HERE / "retrain.png"))


def main() -> int:
    from slimscope.gui.main_window import MainWindow
    from slimscope.resources import DEMO_MODEL

    only_retrain = "--retrain-only" in sys.argv  # the retraining dialog alone (the others take a while)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    # The built-in layout, not the one this machine's user left behind.
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, tempfile.mkdtemp())
    window = MainWindow()
    window.set_theme("light")
    window.resize(1500, 900)
    window.show()
    window.open_model(DEMO_MODEL)
    session = window.session
    wait_until(app, lambda: session.result is not None and bool(session.result.views))
    if only_retrain:
        take_retrain(app, window)
        window.close()
        return 0
    # A walk through a few recipes, so the history has a path.
    panel = window.settings_panel
    panel.defaults_mode.setChecked(True)
    for sparsity in (0.7, 0.3, 0.5):
        panel.sparsity_spin.setValue(sparsity)
        wait_until(app, lambda: session.result_is_current and bool(session.result.views))
    panel.defaults_mode.setChecked(False)
    window.layer_table.select_row(5)
    settle(app)
    shots = {"main_window.png": "Weights", "model_tab.png": "Model", "layer_error.png": "Layer error",
             "history.png": "History"}  # fmt: skip
    for file, tab in shots.items():
        index = next(i for i in range(window.views.count()) if window.views.tabText(i) == tab)
        window.views.setCurrentIndex(index)
        settle(app)
        window.grab().save(str(HERE / file))
    window.views.setCurrentIndex(0)
    window.set_theme("dark")
    settle(app)
    window.grab().save(str(HERE / "main_window_dark.png"))
    window.set_theme("light")
    take_retrain(app, window)
    window.set_theme("system")
    window.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
