"""Read a NumPy `.npz` archive: array `x` (samples) and, optionally, `y` (class indices).

`x` as uint8 holds images ([N, H, W], [N, H, W, C] or [N, C, H, W] with C = 1 or 3) and goes through
the preprocessing; `x` as floats is taken to be model input already and used as it is.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from slimscope.core.data.dataset import Dataset
from slimscope.core.data.preprocess import PreprocessSpec, images_to_input, resize_array_images
from slimscope.core.errors import DatasetError
from slimscope.core.tasks import Progress, Task


def read_npz(path: Path, spec: PreprocessSpec, limit: int | None) -> Task[Dataset]:
    yield Progress(None, f"Reading {path.name}")
    x, y = _arrays(path, limit)
    if x.dtype == np.uint8:
        images = _as_nhwc(x, path)
        yield Progress(0.5, f"Preprocessing {len(images)} images from {path.name}")
        x = images_to_input(resize_array_images(images, spec), spec)
        return Dataset(x, y, None, str(path), layout=spec.layout)
    if not np.issubdtype(x.dtype, np.floating):
        raise DatasetError(
            f"Array 'x' in '{path.name}' holds {x.dtype} values; Slimscope reads uint8 images "
            "or float model input."
        )
    if not np.isfinite(x).all():
        raise DatasetError(f"Array 'x' in '{path.name}' contains NaN or infinite values.")
    notes: tuple[str, ...] = ()
    if spec != PreprocessSpec():
        notes = (f"'x' in '{path.name}' is already float model input, so the preprocessing was not applied.",)
    return Dataset(np.asarray(x, dtype=np.float32), y, None, str(path), notes=notes)


def _arrays(path: Path, limit: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as archive:  # never unpickle: a data file must not run code
            if "x" not in archive.files:
                found = ", ".join(repr(name) for name in archive.files) or "no arrays"
                raise DatasetError(f"'{path.name}' has no array named 'x' (it holds {found}).")
            x = archive["x"][:limit]
            y = archive["y"][:limit] if "y" in archive.files else None
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"Cannot read '{path.name}' as a .npz archive: {_reason(exc)}.") from None
    if x.ndim < 2 or x.shape[0] == 0:
        raise DatasetError(f"Array 'x' in '{path.name}' holds no samples (shape {list(x.shape)}).")
    return x, None if y is None else _labels(y, len(x), path)


def _reason(exc: Exception) -> str:
    text = str(exc).strip().rstrip(".") or type(exc).__name__
    if "allow_pickle" in text:
        return "it holds Python objects, which are not read because unpickling can run code"
    return text.splitlines()[0]


def _labels(y: np.ndarray, count: int, path: Path) -> np.ndarray:
    if y.ndim != 1 or len(y) != count:
        raise DatasetError(
            f"Array 'y' in '{path.name}' must hold one class index per sample ({count}), "
            f"but its shape is {list(y.shape)}."
        )
    if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise DatasetError(f"Array 'y' in '{path.name}' must hold class indices (integers >= 0).")
    return y.astype(np.int64)


def _as_nhwc(x: np.ndarray, path: Path) -> np.ndarray:
    """uint8 images in any common layout → [N, H, W, C]."""
    if x.ndim == 3:
        return x[..., None]
    if x.ndim == 4 and x.shape[-1] in (1, 3):
        return x
    if x.ndim == 4 and x.shape[1] in (1, 3):
        return x.transpose(0, 2, 3, 1)
    raise DatasetError(
        f"Array 'x' in '{path.name}' holds uint8 values of shape {list(x.shape)}; images must be "
        "[N, H, W], [N, H, W, C] or [N, C, H, W] with 1 or 3 channels."
    )
