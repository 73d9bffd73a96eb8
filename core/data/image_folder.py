"""Read a folder of images: class sub-folders (labels = sorted folder names) or a flat, unlabelled folder.

With a limit, labelled images are taken class by class in turn, so that the first N samples cover every
class rather than only the first one.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import zip_longest
from pathlib import Path

import numpy as np
from PIL import Image

from slimscope.core.data.dataset import Dataset
from slimscope.core.data.limits import check_image_pixels, check_memory
from slimscope.core.data.preprocess import PreprocessSpec, images_to_input, prepare_image, prepared_shape
from slimscope.core.errors import DatasetError
from slimscope.core.tasks import Progress, Task

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
_PROGRESS_EVERY = 64  # images between progress reports: frequent enough for a bar, cheap to yield


def read_image_folder(folder: Path, spec: PreprocessSpec, limit: int | None) -> Task[Dataset]:
    yield Progress(None, f"Listing images in {folder.name}")
    files, labels, class_names = _list_images(folder)
    if limit is not None:
        files, labels = files[:limit], labels[:limit]
    yield from _check_sizes(files, folder, spec)
    images: list[np.ndarray] = []
    for index, file in enumerate(files):
        if index % _PROGRESS_EVERY == 0:
            yield Progress(index / len(files), f"Reading images {index}/{len(files)}")
        images.append(_read(file, folder, spec))
    stacked = _stack(images, files, folder)
    del images  # the stack holds them now
    x = images_to_input(stacked, spec)
    y = np.asarray(labels, dtype=np.int64) if class_names is not None else None
    return Dataset(x, y, None, str(folder), class_names=class_names, layout=spec.layout)


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and _visible(path)


def _list_images(folder: Path) -> tuple[list[Path], list[int], tuple[str, ...] | None]:
    try:
        entries = sorted(entry for entry in folder.iterdir() if _visible(entry))
    except OSError as exc:
        raise DatasetError(f"Cannot read folder '{folder}': {exc.strerror}.") from None
    loose = [entry for entry in entries if _is_image(entry)]
    class_dirs = [entry for entry in entries if entry.is_dir()]
    per_class = [sorted(p for p in d.rglob("*") if _is_image(p)) for d in class_dirs]
    if loose and any(per_class):
        raise DatasetError(
            f"Folder '{folder}' mixes images and class sub-folders of images; put every image in a "
            "class sub-folder (labelled) or none (unlabelled)."
        )
    if loose:
        return loose, [0] * len(loose), None
    if not any(per_class):
        raise DatasetError(
            f"Folder '{folder}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}), "
            "neither directly nor in class sub-folders."
        )
    # Every sub-folder is a class, even an empty one, so that label indices match the model's classes.
    # Classes take turns, so that the first N images (a limit) cover every class.
    order = [
        (file, label) for row in zip_longest(*per_class) for label, file in enumerate(row) if file is not None
    ]
    return [file for file, _ in order], [label for _, label in order], tuple(d.name for d in class_dirs)


def _check_sizes(files: list[Path], folder: Path, spec: PreprocessSpec) -> Task[None]:
    """Refuse, from the images' headers alone, images too large to decode and a folder whose images
    would not fit in memory once read (Pillow's open reads only the header; `load` decodes)."""
    pixels, channels = 0, 1
    for index, file in enumerate(files):
        if index % _PROGRESS_EVERY == 0:
            yield Progress(index / len(files), f"Checking image sizes {index}/{len(files)}")
        name = str(file.relative_to(folder))
        with _image_errors(name, folder), Image.open(file) as image:
            check_image_pixels(*image.size, name)
            height, width, image_channels = prepared_shape(*image.size, image.mode, spec, name)
        pixels += height * width
        channels = max(channels, image_channels)
    # Held at once: the prepared uint8 images and their stack, then the float32 input and its copy in
    # the final layout (about ten bytes per pixel and channel).
    check_memory(10 * pixels * channels, f"the {len(files)} images in '{folder}'")


def _read(file: Path, folder: Path, spec: PreprocessSpec) -> np.ndarray:
    name = str(file.relative_to(folder))
    with _image_errors(name, folder), Image.open(file) as image:
        check_image_pixels(*image.size, name)  # before decoding: the header may have changed meanwhile
        image.load()
        return prepare_image(image, spec, name)


@contextmanager
def _image_errors(name: str, folder: Path) -> Iterator[None]:
    """What Pillow raises on a damaged or hostile image, as one sentence naming it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except DatasetError:
        raise
    except (
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        reason = str(exc).strip().rstrip(".") or type(exc).__name__
        raise DatasetError(f"Cannot read image '{name}' in '{folder}': {reason}.") from None


def _stack(images: list[np.ndarray], files: list[Path], folder: Path) -> np.ndarray:
    """One uint8 [N, H, W, C] array; one-channel images join colour ones as gray RGB."""
    if any(image.shape[-1] == 3 for image in images):
        images = [np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image for image in images]
    first = images[0].shape[:2]
    for image, file in zip(images, files, strict=True):
        if image.shape[:2] != first:
            raise DatasetError(
                f"Images differ in size ({first[0]}x{first[1]} in '{files[0].relative_to(folder)}', "
                f"{image.shape[0]}x{image.shape[1]} in '{file.relative_to(folder)}'); set the "
                "preprocessing's resize and center_crop to make them equal."
            )
    return np.stack(images)
