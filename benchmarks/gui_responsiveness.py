"""How responsive the window stays: the longest GUI-thread stall while opening and optimizing, and the
time from an edit to the first (running accuracy), the headline (accuracy, sizes) and the complete numbers
(latency and per-layer errors too).

    QT_QPA_PLATFORM=offscreen python benchmarks/gui_responsiveness.py

A 10 ms QTimer ticks on the GUI thread throughout; the longest gap between ticks is the longest stall.
Models: the demo network, and a ResNet-18-sized one (11.7 M weights) at 64 px with 256 random images.
Goals on a 2-core machine: stall <= 50 ms; demo edit -> final numbers <= 1 s; ResNet-18 first numbers <= 2 s.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
from PySide6.QtCore import QTimer  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from resnet_onnx import build_resnet18  # noqa: E402

from slimscope.core.evaluate import RunningMetrics  # noqa: E402
from slimscope.resources import DEMO_MODEL  # noqa: E402


class Ticker:
    """Records every tick of a 10 ms timer on the GUI thread."""

    def __init__(self) -> None:
        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def longest_gap_ms(self, since: float) -> float:
        ticks = [t for t in self.ticks if t >= since]
        return float(np.diff(ticks).max() * 1000) if len(ticks) > 1 else float("nan")


def wait_until(app: QApplication, done, timeout_s: float = 300) -> float:
    start = time.perf_counter()
    while not done():
        app.processEvents()
        time.sleep(0.002)
        if time.perf_counter() - start > timeout_s:
            raise TimeoutError("the window did not finish in time")
    return time.perf_counter() - start


def measure(app: QApplication, window, ticker: Ticker, model: Path, data: Path | None) -> dict:
    start = time.perf_counter()
    window.open_model(model)
    wait_until(app, lambda: window.session.loaded is not None and window.session.loaded.source == model)
    opened = time.perf_counter() - start
    if data is not None:
        window.session.set_evaluation_data(data)
        window.session.set_calibration_data(data)
    wait_until(app, lambda: window.session.result_is_current)
    wait_until(app, lambda: window.session.result.report.latency_ms is not None)
    stall_open = ticker.longest_gap_ms(start)
    row = {"open s": opened, "stall open+compare ms": stall_open}
    panel = window.settings_panel
    panel.defaults_mode.setChecked(True)
    # Two edits through the settings panel, like a user: a new sparsity for every layer (the pruned model's
    # activations change, so calibration runs again), then new weight bits (calibration ranges are reused).
    edits = {
        "prune": lambda: panel.sparsity_spin.setValue(0.3 if panel.sparsity_spin.value() != 0.3 else 0.4),
        "bits": lambda: panel.weight_bits.setCurrentText(
            "7" if panel.weight_bits.currentText() != "7" else "6"
        ),
    }
    for label, edit in edits.items():
        row |= {f"{label}: {key}": value for key, value in time_edit(app, window, ticker, edit).items()}
    return row


def time_edit(app: QApplication, window, ticker: Ticker, edit) -> dict:
    first: list[float] = []
    relay = window.live.progressed.connect(
        lambda p: first.append(time.perf_counter()) if isinstance(p.partial, RunningMetrics) else None
    )
    start = time.perf_counter()
    edit()
    wait_until(app, lambda: window.session.result_is_current)
    headline = time.perf_counter() - start
    wait_until(app, lambda: window.session.result.report.latency_ms is not None)
    final = time.perf_counter() - start
    window.live.progressed.disconnect(relay)
    return {
        "first s": (first[0] - start) if first else float("nan"),
        "accuracy s": headline,
        "all s": final,
        "stall ms": ticker.longest_gap_ms(start),
    }


def main() -> int:
    from slimscope.gui.app import freeze_imported_objects
    from slimscope.gui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv)
    freeze_imported_objects()  # as `slimscope` does at start
    ticker = Ticker()
    ticker.timer.start()
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        big = build_resnet18(Path(folder) / "resnet18_sized.onnx", size=64)
        data = Path(folder) / "images.npz"
        np.savez(data, x=np.random.default_rng(0).standard_normal((256, 3, 64, 64)).astype(np.float32))
        for name, model, model_data in (("demo", DEMO_MODEL, None), ("ResNet-18-sized", big, data)):
            window = MainWindow()
            window.show()
            rows[name] = measure(app, window, ticker, model, model_data)
            window.live.shutdown()
            window.opener.cancel()
            window.close()
    keys = list(next(iter(rows.values())))
    print(f"{'':<24}" + "".join(f"{name:>18}" for name in rows))
    for key in keys:
        print(f"{key:<24}" + "".join(f"{row[key]:>18.3f}" for row in rows.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
