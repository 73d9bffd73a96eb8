"""Smoke test: the real command starts the window on the demo model and exits cleanly."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gui_command_starts_and_quits():
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", SLIMSCOPE_QUIT_AFTER_MS="1500")
    result = subprocess.run(
        [sys.executable, "-m", "slimscope", "gui", "resources/demo/digits_net.onnx"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
