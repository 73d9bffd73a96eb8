"""Read a NumPy `.npz` archive: array `x` (samples) and, optionally, `y` (class indices).

`x` as uint8 holds images ([N, H, W], [N, H, W, C] or [N, C, H, W] with C = 1 or 3) and goes through
the preprocessing; `x` as floats is taken to be model input already and used as it is.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
from numpy.lib import format as npy_format

from slimscope.core.data.dataset import Dataset
from slimscope.core.data.limits import check_expansion, check_memory, format_bytes, refuse_special_file
from slimscope.core.data.preprocess import (
    PreprocessSpec,
    images_to_input,
    prepared_shape,
    resize_array_images,
)
from slimscope.core.errors import DatasetError
from slimscope.core.tasks import Progress, Task


def read_npz(path: Path, spec: PreprocessSpec, limit: int | None) -> Task[Dataset]:
    yield Progress(None, f"Reading {path.name}")
    x, y = _arrays(path, spec, limit)
    if x.dtype == np.uint8:
        images = _as_nhwc(x, path)
        yield Progress(0.5, f"Preprocessing {len(images)} images from {path.name}")
        x = images_to_input(resize_array_images(images, spec), spec)
        return Dataset(x, y, None, str(path), layout=spec.layout)
    if not np.isfinite(x).all():
        raise DatasetError(f"Array 'x' in '{path.name}' contains NaN or infinite values.")
    if x.dtype.itemsize > 4 and (x.max() > _FLOAT32_MAX or x.min() < -_FLOAT32_MAX):
        raise DatasetError(
            f"Array 'x' in '{path.name}' holds values beyond the float32 range (±{_FLOAT32_MAX:.1e}), "
            "which the model cannot take."
        )
    notes: tuple[str, ...] = ()
    if spec != PreprocessSpec():
        notes = (f"'x' in '{path.name}' is already float model input, so the preprocessing was not applied.",)
    return Dataset(np.asarray(x, dtype=np.float32), y, None, str(path), notes=notes)


_FLOAT32_MAX = float(np.finfo(np.float32).max)
_INT64_MAX = int(np.iinfo(np.int64).max)


def _arrays(path: Path, spec: PreprocessSpec, limit: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """`x` and `y` (at most `limit` samples each), read member by member: each .npy header is checked
    (type, shape, declared size against the archive's, memory) before a byte of its array is decoded."""
    refuse_special_file(path, "data")
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name.removesuffix(".npy"): name for name in archive.namelist()}
            if "x" not in members:
                found = ", ".join(repr(name) for name in members) or "no arrays"
                raise DatasetError(f"'{path.name}' has no array named 'x' (it holds {found}).")
            x = _read_member(archive, members["x"], path, limit, lambda d, s: _check_x(d, s, spec, path))
            y = None
            if "y" in members:
                y = _read_member(archive, members["y"], path, limit, lambda d, s: _check_y(d, s, path))
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError, RuntimeError, zipfile.BadZipFile, zlib.error) as exc:
        raise DatasetError(f"Cannot read '{path.name}' as a .npz archive: {_reason(exc)}.") from None
    return x, None if y is None else _labels(y, len(x), path)


HeaderCheck = Callable[[np.dtype, tuple[int, ...]], None]


def _read_member(
    archive: zipfile.ZipFile, name: str, path: Path, limit: int | None, check: HeaderCheck
) -> np.ndarray:
    info = archive.getinfo(name)
    key = name.removesuffix(".npy")
    with archive.open(info) as member:
        dtype, shape, fortran = _npy_header(member, key, path)
        declared = dtype.itemsize * math.prod(shape)
        if member.tell() + declared > info.file_size:
            raise DatasetError(
                f"Array '{key}' in '{path.name}' declares shape {list(shape)} ({format_bytes(declared)}) but "
                f"the archive holds {format_bytes(info.file_size)} for it: the file is damaged."
            )
        check_expansion(info.file_size, info.compress_size, key, path)
        if fortran and len(shape) > 1:  # column-major: the first samples are not the first bytes
            check(dtype, shape)
            count = shape[0] if limit is None else min(limit, shape[0])
            return _filled(member, np.empty(shape[::-1], dtype)).T[:count]
        read = shape if not shape or limit is None else (min(limit, shape[0]), *shape[1:])
        check(dtype, read)  # what is read: only the first `limit` samples
        return _filled(member, np.empty(read, dtype))


def _npy_header(member: IO[bytes], key: str, path: Path) -> tuple[np.dtype, tuple[int, ...], bool]:
    """dtype, shape and Fortran order of the .npy array `member` starts with (numpy's own header parser,
    which refuses oversized headers); leaves `member` at the array's bytes."""
    if member.read(len(npy_format.MAGIC_PREFIX)) != npy_format.MAGIC_PREFIX:
        raise DatasetError(f"Member '{key}' of '{path.name}' is not a NumPy array.")
    version = tuple(member.read(2))
    readers = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
    if version not in readers:
        raise DatasetError(f"Array '{key}' in '{path.name}' uses .npy version {version}, which is not read.")
    try:
        shape, fortran, dtype = readers[version](member)
    except ValueError as exc:  # numpy's words would point at allow_pickle, which is not the way out here
        what = "too long to be read safely" if "is large" in str(exc) else "damaged"
        raise DatasetError(f"Array '{key}' in '{path.name}' has a .npy header that is {what}.") from None
    if any(int(d) < 0 for d in shape):
        raise DatasetError(f"Array '{key}' in '{path.name}' has a .npy header that is damaged.")
    if dtype.hasobject:
        raise DatasetError(
            f"Cannot read '{path.name}' as a .npz archive: {_reason(ValueError('allow_pickle'))}."
        )
    return dtype, tuple(int(d) for d in shape), bool(fortran)


def _filled(member: IO[bytes], array: np.ndarray) -> np.ndarray:
    """`array` with its bytes read from `member` (no temporary copy of the bytes)."""
    view = array.reshape(-1).view(np.uint8).data
    filled = 0
    while filled < len(view):
        count = member.readinto(view[filled:])  # type: ignore[attr-defined]
        if not count:
            raise EOFError("the file is truncated")
        filled += count
    return array


def _check_x(dtype: np.dtype, shape: tuple[int, ...], spec: PreprocessSpec, path: Path) -> None:
    """Type, shape and memory of `x`, from its header, before its bytes are read."""
    if len(shape) < 2 or shape[0] == 0:
        raise DatasetError(f"Array 'x' in '{path.name}' holds no samples (shape {list(shape)}).")
    elements = math.prod(shape[1:])
    raw = dtype.itemsize * elements * shape[0]
    if dtype == np.uint8:
        height, width, channels = _as_nhwc(np.empty((0, *shape[1:]), np.uint8), path).shape[1:]
        mode = "L" if channels == 1 else "RGB"
        prepared = math.prod(prepared_shape(width, height, mode, spec, "x[0]"))
        # the images, resized and stacked, then the float32 input and its copy in the final layout
        check_memory(raw + 10 * prepared * shape[0], f"'{path.name}'")
        return
    if not np.issubdtype(dtype, np.floating):
        raise DatasetError(
            f"Array 'x' in '{path.name}' holds {dtype} values; Slimscope reads uint8 images "
            "or float model input."
        )
    check_memory(raw + 5 * elements * shape[0], f"'{path.name}'")  # + float32 copy and a finiteness mask


def _check_y(dtype: np.dtype, shape: tuple[int, ...], path: Path) -> None:
    if not np.issubdtype(dtype, np.integer):
        raise DatasetError(f"Array 'y' in '{path.name}' must hold class indices (integers >= 0).")
    check_memory(dtype.itemsize * math.prod(shape) * 2, f"'{path.name}'")


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
    if len(y) and int(y.max()) > _INT64_MAX:  # uint64 beyond int64 would wrap negative when cast
        raise DatasetError(
            f"Array 'y' in '{path.name}' holds class index {int(y.max())}, too large to be a class."
        )
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
