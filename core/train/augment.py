"""Random changes to training batches (the recipe's `training.augment`), made on model-ready float input."""

from __future__ import annotations

import numpy as np

from slimscope.core.train.train_spec import AugmentSettings


def augment_batch(
    x: np.ndarray, augment: AugmentSettings, layout: str, rng: np.random.Generator
) -> np.ndarray:
    """`x` (model-ready float32 images, `layout` NCHW or NHWC) randomly shifted, flipped and noised."""
    images = x if layout == "NCHW" else x.transpose(0, 3, 1, 2)  # a view with the image axes last
    images = _shifted(images, augment.shift, rng) if augment.shift else images.copy()  # x stays as is
    if augment.flip:
        flipped = rng.random(len(images)) < 0.5
        images[flipped] = images[flipped, :, :, ::-1]  # the right side copies first: no overlap
    result = np.ascontiguousarray(images if layout == "NCHW" else images.transpose(0, 2, 3, 1))
    if augment.noise:
        result += np.float32(augment.noise) * rng.standard_normal(result.shape, dtype=np.float32)
    return result


def _shifted(images: np.ndarray, shift: int, rng: np.random.Generator) -> np.ndarray:
    """Every [C, H, W] image moved by its own random (dy, dx) in [-shift, shift]; zeros fill in."""
    height, width = images.shape[2:]
    padded = np.pad(images, ((0, 0), (0, 0), (shift, shift), (shift, shift)))
    moves = rng.integers(-shift, shift + 1, size=(len(images), 2))
    shifted = np.empty_like(images)
    for index, (dy, dx) in enumerate(moves):  # content moves down by dy and right by dx
        top, left = shift - dy, shift - dx
        shifted[index] = padded[index, :, top : top + height, left : left + width]
    return shifted
