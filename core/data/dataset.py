"""`Dataset`: evaluation or calibration samples in memory, ready to feed to a model."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays elementwise is not equality
class Dataset:
    """Samples `x` (float32, batch first) and labels `y` (int64 class indices, or None).

    The arrays are held read-only so that `fingerprint`, computed once, stays true.
    """

    x: np.ndarray
    y: np.ndarray | None
    input_name: str | None  # the model input `x` feeds, once `fit_to_model` has matched it
    source: str  # the file or folder it was read from, for messages
    class_names: tuple[str, ...] | None = None  # an image folder's class sub-folders, in label order
    layout: str | None = None  # "NCHW"/"NHWC" when Slimscope built `x` from images; None if given as is
    notes: tuple[str, ...] = ()  # what reading did that the user should know, one sentence each

    def __post_init__(self) -> None:
        # Read-only views: the caller's arrays stay writable, ours cannot change under the hash.
        object.__setattr__(self, "x", _read_only(self.x))
        if self.y is not None:
            object.__setattr__(self, "y", _read_only(self.y))

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x.shape[1:])

    @cached_property
    def fingerprint(self) -> str:
        """A content hash of x and y (shapes and dtypes included), for caches keyed by data."""
        digest = hashlib.blake2b(digest_size=16)
        for array in (self.x, self.y):
            if array is None:
                digest.update(b"none")
                continue
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).data.cast("B"))
        return digest.hexdigest()

    def head(self, count: int | None) -> Dataset:
        """The first `count` samples (all of them when None or larger than the data)."""
        if count is None or count >= len(self):
            return self
        y = None if self.y is None else self.y[:count]
        return dataclasses.replace(self, x=self.x[:count], y=y)

    def with_input_name(self, name: str) -> Dataset:
        """The same data, matched to model input `name`; the fingerprint carries over."""
        fitted = dataclasses.replace(self, input_name=name)
        if "fingerprint" in self.__dict__:
            fitted.__dict__["fingerprint"] = self.__dict__["fingerprint"]
        return fitted


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view
