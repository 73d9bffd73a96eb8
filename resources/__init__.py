"""Bundled resources: the demo model and its held-out test set (built by `build_demo.py`), the app icon."""

from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent / "demo"
DEMO_MODEL = DEMO_DIR / "digits_net.onnx"
DEMO_DATA = DEMO_DIR / "digits_test.npz"
DEMO_CALIBRATION = DEMO_DIR / "digits_calib.npz"
DEMO_TRAINING = DEMO_DIR / "digits_train.npz"  # the training images (uint8 28x28), for retraining
APP_ICON = Path(__file__).resolve().parent / "icons" / "slimscope.png"  # rendered from icons/slimscope.svg
