"""Image preprocessing as the recipe's data section describes it (`$defs.preprocess` in recipe.schema.json).

The steps run in the schema's order, in two stages: `prepare_image` does the per-image work on 8-bit
pixels (grayscale/colour, resize, centre crop) and `images_to_input` turns the stacked uint8 images into
the float tensor a model takes (scale, mean/std, channel order, layout). Keeping pixels as uint8 until
the last stage holds a large folder in a quarter of the memory float32 would need.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

import numpy as np
from jsonschema import Draft202012Validator
from PIL import Image

from slimscope.core.data.limits import MAX_IMAGE_PIXELS
from slimscope.core.errors import DatasetError

Size = tuple[int, int]  # (height, width)


@dataclass(frozen=True)
class PreprocessSpec:
    """How images become model input. `mean` and `std` are given in RGB order (they apply before the
    channel order changes); `grayscale` None keeps one-channel images one-channel and colour ones RGB."""

    resize: int | Size | None = None  # shorter side to this many pixels, or exact (height, width)
    center_crop: int | Size | None = None
    scale: float = 1 / 255
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channel_order: Literal["RGB", "BGR"] = "RGB"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    grayscale: bool | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> PreprocessSpec:
        """Validate a recipe's "preprocess" object against the schema and build the spec."""
        if not data:
            return cls()
        error = next(iter(_validator().iter_errors(dict(data))), None)
        if error is not None:
            where = ".".join(str(part) for part in error.absolute_path)
            field = f" field '{where}'" if where else ""
            raise DatasetError(f"Preprocessing{field}: {error.message}.")
        values = dict(data)
        for key in ("resize", "center_crop", "mean", "std"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The fields that differ from the defaults, JSON-ready (what a recipe's data section holds)."""
        default = PreprocessSpec()
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in asdict(self).items()
            if value != getattr(default, key)
        }


@cache
def _validator() -> Draft202012Validator:
    # The recipe schema is the one definition of the format; validate against its $defs entry.
    text = resources.files("slimscope.core").joinpath("recipe.schema.json").read_text("utf-8")
    schema = json.loads(text)
    return Draft202012Validator({"$defs": schema["$defs"], "$ref": "#/$defs/preprocess"})


def _size(value: int | Size) -> Size:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def prepare_image(image: Image.Image, spec: PreprocessSpec, name: str) -> np.ndarray:
    """Grayscale/colour, resize and centre crop one image; uint8 [H, W, C] with C = 1 or 3 (RGB)."""
    if spec.grayscale or (spec.grayscale is None and image.mode in _ONE_CHANNEL_MODES):
        image = image.convert("L")
    else:
        image = image.convert("RGB")
    if spec.resize is not None:
        size = _resized(image.size, spec.resize)
        _check_resized(size, name)
        image = image.resize(size, Image.Resampling.BILINEAR)
    if spec.center_crop is not None:
        image = _center_crop(image, _size(spec.center_crop), name)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def prepared_shape(
    width: int, height: int, mode: str, spec: PreprocessSpec, name: str
) -> tuple[int, int, int]:
    """(height, width, channels) of what `prepare_image` makes of an image of this size and mode, known
    from its header alone: what reading a folder will hold is checked before any image is decoded."""
    one_channel = spec.grayscale or (spec.grayscale is None and mode in _ONE_CHANNEL_MODES)
    if spec.resize is not None:
        width, height = _resized((width, height), spec.resize)
        _check_resized((width, height), name)
    if spec.center_crop is not None:
        crop_h, crop_w = _size(spec.center_crop)
        height, width = min(height, crop_h), min(width, crop_w)
    return height, width, 1 if one_channel else 3


def _check_resized(size: tuple[int, int], name: str) -> None:
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise DatasetError(
            f"The preprocessing's resize makes image '{name}' {width}x{height} pixels "
            f"({width * height / 1e6:.1f} million); Slimscope makes images of at most "
            f"{MAX_IMAGE_PIXELS / 1e6:.1f} million pixels."
        )


# Modes whose pixels carry one value (`I;16` and `F` are converted to 8 bits by Pillow's rules).
_ONE_CHANNEL_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


def _resized(size: tuple[int, int], resize: int | Size) -> tuple[int, int]:
    """Pillow (width, height) after resizing; an int sets the shorter side as torchvision does."""
    width, height = size
    if not isinstance(resize, int):
        return int(resize[1]), int(resize[0])
    if width <= height:
        return resize, int(resize * height / width)
    return int(resize * width / height), resize


def _center_crop(image: Image.Image, crop: Size, name: str) -> Image.Image:
    width, height = image.size
    crop_h, crop_w = crop
    if crop_h > height or crop_w > width:
        raise DatasetError(
            f"Image '{name}' is {height}x{width} after resizing, smaller than the "
            f"{crop_h}x{crop_w} centre crop; resize it to at least the crop size."
        )
    top = int(round((height - crop_h) / 2.0))  # torchvision's rounding, so results match its pipeline
    left = int(round((width - crop_w) / 2.0))
    return image.crop((left, top, left + crop_w, top + crop_h))


def images_to_input(images: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """uint8 images [N, H, W, C] (RGB) → float32 model input: scale, mean/std, channel order, layout."""
    channels = images.shape[-1]
    x = images.astype(np.float32) * np.float32(spec.scale)
    for name, values in (("mean", spec.mean), ("std", spec.std)):
        if values is not None and len(values) not in (1, channels):
            raise DatasetError(
                f"Preprocessing '{name}' has {len(values)} values but the images have {channels} "
                f"channel{'s' if channels != 1 else ''}; give 1 or {channels}."
            )
    if spec.mean is not None:
        x -= np.asarray(spec.mean, dtype=np.float32)
    if spec.std is not None:
        x /= np.asarray(spec.std, dtype=np.float32)
    if spec.channel_order == "BGR" and channels == 3:
        x = x[..., ::-1]
    if spec.layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=np.float32)


def resize_array_images(images: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """Apply the per-image steps to uint8 images already in memory ([N, H, W, C], C = 1 or 3)."""
    unchanged = spec.resize is None and spec.center_crop is None
    if unchanged and spec.grayscale is None:
        return images
    if unchanged and (spec.grayscale is False) == (images.shape[-1] == 3):
        return images
    prepared = [
        prepare_image(Image.fromarray(image[:, :, 0] if image.shape[-1] == 1 else image), spec, f"x[{i}]")
        for i, image in enumerate(images)
    ]
    return np.stack(prepared)
