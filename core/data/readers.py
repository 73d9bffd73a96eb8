"""Open evaluation or calibration data: a registry maps the kind of source to its reader.

A folder is read as images; a file by its suffix. Every reader is a generator yielding `Progress`, so a
large folder can be read under a progress bar and cancelled by closing the generator.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from slimscope.core.data.dataset import Dataset
from slimscope.core.data.image_folder import read_image_folder
from slimscope.core.data.npz_reader import read_npz
from slimscope.core.data.preprocess import PreprocessSpec
from slimscope.core.errors import DatasetError
from slimscope.core.tasks import Task, run_sync

Reader = Callable[[Path, PreprocessSpec, "int | None"], Task[Dataset]]

READERS: dict[str, Reader] = {"npz": read_npz, "image_folder": read_image_folder}
SUFFIX_KINDS: dict[str, str] = {".npz": "npz"}
FOLDER_KIND = "image_folder"


def data_kind(path: Path) -> str:
    """The reader kind for `path`; raises DatasetError for a missing or unsupported source."""
    if path.is_dir():
        return FOLDER_KIND
    if not path.exists():
        raise DatasetError(f"Data '{path}' does not exist.")
    kind = SUFFIX_KINDS.get(path.suffix.lower())
    if kind is None:
        raise DatasetError(
            f"'{path.name}' is not data Slimscope reads: give a .npz file with an array 'x' "
            "(and optionally labels 'y'), or a folder of images."
        )
    if kind == "npz" and path.is_file():  # a pipe or device is the reader's to refuse, without reading it
        _refuse_other_content(path)
    return kind


_ZIP_STARTS = (b"PK\x03\x04", b"PK\x05\x06")  # a member, or an empty archive's end record
_NPY_START = b"\x93NUMPY"


def _refuse_other_content(path: Path) -> None:
    """A .npz is a zip archive of .npy arrays: say so of a file that is not one, by its first bytes."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise DatasetError(f"Cannot read '{path.name}': {exc.strerror or exc}.") from None
    if head.startswith(_ZIP_STARTS):
        return
    if head.startswith(_NPY_START):
        raise DatasetError(
            f"'{path.name}' is a single NumPy array (.npy), not a NumPy .npz archive; save it with "
            "numpy.savez(name, x=array) (and y=labels)."
        )
    what = "empty" if not head else "not a NumPy .npz archive (not even a zip file)"
    raise DatasetError(f"'{path.name}' is {what}; save data with numpy.savez(name, x=array).")


def iter_load_dataset(
    path: str | os.PathLike[str],
    preprocess: PreprocessSpec | Mapping[str, Any] | None = None,
    limit: int | None = None,
) -> Task[Dataset]:
    """Read data for evaluation or calibration, yielding Progress; returns the Dataset."""
    if limit is not None and limit < 1:
        raise DatasetError(f"The sample limit must be at least 1, got {limit}.")
    spec = preprocess if isinstance(preprocess, PreprocessSpec) else PreprocessSpec.from_dict(preprocess)
    source = Path(path)
    return (yield from READERS[data_kind(source)](source, spec, limit))


def load_dataset(
    path: str | os.PathLike[str],
    preprocess: PreprocessSpec | Mapping[str, Any] | None = None,
    limit: int | None = None,
) -> Dataset:
    """`iter_load_dataset` run to its end."""
    return run_sync(iter_load_dataset(path, preprocess, limit))
