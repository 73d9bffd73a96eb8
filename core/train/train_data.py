"""Labelled training data read from disk batch by batch, split, shuffled per epoch and augmented.

Evaluation data (`core/data/`) is read whole into memory; a training set may be larger than memory, so
opening one reads only a listing (the image files, or the .npz's array header and its labels), and each
batch reads and preprocesses its own samples with the evaluation readers' helpers:
- an .npz whose `x` is stored uncompressed (`np.savez`) is memory-mapped: random access, exact shuffle;
- a compressed `x` (`np.savez_compressed`) can only be read front to back, in chunks; shuffling then
  mixes samples within a window of a few chunks, so it is approximate (see `TrainingData.batches`);
- an image folder (one sub-folder per class) decodes only the images of the batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import struct
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from numpy.lib import format as npy_format

from slimscope.core.data.dataset import Dataset
from slimscope.core.data.fit import fit_to_model
from slimscope.core.data.limits import check_expansion, refuse_special_file
from slimscope.core.data.preprocess import PreprocessSpec, images_to_input, resize_array_images
from slimscope.core.data.readers import data_kind
from slimscope.core.errors import DatasetError
from slimscope.core.train.augment import augment_batch
from slimscope.core.train.train_spec import AugmentSettings

# Private helpers of the evaluation readers, imported so that training data is listed, checked and
# decoded by exactly the same rules and messages (those modules are not ours to change).
from slimscope.core.data.image_folder import _list_images, _read  # isort: skip
from slimscope.core.data.npz_reader import _as_nhwc, _check_y, _labels, _read_member, _reason  # isort: skip

__all__ = ["TrainingData", "open_training_data"]

_CHUNK_SAMPLES = 2048  # samples read at a time from a compressed `x`
_CHUNK_BYTES = 32 * 2**20  # ...or fewer, so that a chunk of large images stays this small
_WINDOW_CHUNKS = 4  # chunks whose samples are mixed together when a compressed `x` is shuffled
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # zip local file header: signature, ..., name and extra lengths


@dataclass(frozen=True)
class _NpzArray:
    """Array `x` of an .npz file, read on demand: memory-mapped when stored, streamed when compressed."""

    path: Path
    spec: PreprocessSpec
    dtype: np.dtype
    shape: tuple[int, ...]
    data_offset: int | None  # where the array's bytes start in the file when stored; None: compressed

    @property
    def count(self) -> int:
        return self.shape[0]

    @property
    def layout(self) -> str | None:
        return self.spec.layout if self.dtype == np.uint8 else None

    @property
    def random_access(self) -> bool:
        return self.data_offset is not None

    def read(self, indices: np.ndarray) -> np.ndarray:
        """Model-ready samples `indices` (ascending) of a stored `x`; only their bytes are read."""
        # A fresh map per batch: nothing open between batches, and the object stays cheap to pickle.
        mapped = np.memmap(self.path, self.dtype, mode="r", offset=self.data_offset or 0, shape=self.shape)
        return self.to_input(np.asarray(mapped[indices]))

    def read_first(self) -> np.ndarray:
        if self.random_access:
            return self.read(np.zeros(1, dtype=np.int64))
        return self.to_input(next(self.chunks(1, stop=1))[1])

    def chunks(self, samples: int, stop: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first sample index, raw samples) of a compressed `x` up to sample `stop`, front to back,
        `samples` at a time."""
        sample_shape = self.shape[1:]
        sample_bytes = self.dtype.itemsize * math.prod(sample_shape)
        with zipfile.ZipFile(self.path) as archive, archive.open("x.npy") as member:
            _read_npy_header(member, self.path)
            for start in range(0, min(stop, self.count), samples):
                wanted = min(samples, stop - start, self.count - start)
                data = member.read(wanted * sample_bytes)
                if len(data) != wanted * sample_bytes:
                    raise DatasetError(f"Array 'x' in '{self.path.name}' ends early: the file is truncated.")
                yield start, np.frombuffer(data, self.dtype).reshape((wanted, *sample_shape))

    def chunk_samples(self) -> int:
        sample_bytes = self.dtype.itemsize * math.prod(self.shape[1:])
        return max(1, min(_CHUNK_SAMPLES, _CHUNK_BYTES // max(sample_bytes, 1)))

    def to_input(self, raw: np.ndarray) -> np.ndarray:
        """What `npz_reader.read_npz` does to the whole array, done to one batch."""
        if raw.dtype == np.uint8:
            images = _as_nhwc(raw, self.path)
            return images_to_input(resize_array_images(images, self.spec), self.spec)
        if not np.isfinite(raw).all():
            raise DatasetError(f"Array 'x' in '{self.path.name}' contains NaN or infinite values.")
        return np.asarray(raw, dtype=np.float32)


@dataclass(frozen=True)
class _ImageFiles:
    """A folder of images in class sub-folders; a batch decodes and preprocesses only its own files."""

    folder: Path
    spec: PreprocessSpec
    files: tuple[Path, ...]
    image_shape: tuple[int, ...]  # [H, W, C] of the prepared first image; every image must match it
    random_access = True

    @property
    def count(self) -> int:
        return len(self.files)

    @property
    def layout(self) -> str | None:
        return self.spec.layout

    def read(self, indices: np.ndarray) -> np.ndarray:
        images = [self._prepared(self.files[int(index)]) for index in indices]
        return images_to_input(np.stack(images), self.spec)

    def read_first(self) -> np.ndarray:
        return self.read(np.zeros(1, dtype=np.int64))

    def _prepared(self, file: Path) -> np.ndarray:
        # The evaluation reader compares the images it holds all at once; here batches are read apart,
        # so every image is compared with the first one (a gray image joins colour ones as gray RGB).
        image = _read(file, self.folder, self.spec)
        if image.shape[-1] == 1 and self.image_shape[-1] == 3:
            image = np.repeat(image, 3, axis=-1)
        if image.shape != self.image_shape:
            first, name = self.files[0].relative_to(self.folder), file.relative_to(self.folder)
            raise DatasetError(
                f"Images differ in size or colour ({_hwc(self.image_shape)} in '{first}', "
                f"{_hwc(image.shape)} in '{name}'); set the preprocessing's resize, center_crop and "
                "grayscale to make them equal."
            )
        return image


def _hwc(shape: tuple[int, ...]) -> str:
    return f"{shape[0]}x{shape[1]} {'colour' if shape[2] == 3 else 'gray'}"


_Reader = _NpzArray | _ImageFiles


@dataclass(frozen=True, eq=False)  # eq=False: comparing arrays elementwise is not equality
class TrainingData:
    """A labelled set read from disk batch by batch; `indices` selects a subset (a split)."""

    source: str  # the file or folder, for messages
    num_classes: int
    sample_shape: tuple[int, ...]  # one model-ready sample, e.g. (1, 28, 28)
    input_name: str | None  # the model input the samples feed
    indices: np.ndarray  # int64, ascending: the samples of the source this set holds
    reader: _Reader = field(repr=False)  # how the samples are read: the subsets of a source share it
    all_labels: np.ndarray = field(repr=False)  # int64, one per sample of the source (not only `indices`)
    content_id: str = field(repr=False)  # the source's sizes and modification times
    class_names: tuple[str, ...] | None = None  # an image folder's class sub-folders, in label order
    notes: tuple[str, ...] = ()  # what reading does that the user should know, one sentence each

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def labels(self) -> np.ndarray:
        """The class index of every sample of this set, in `indices` order."""
        return self.all_labels[self.indices]

    @property
    def layout(self) -> str:
        """Where the image axes are in a sample: as preprocessed, or guessed for float model input."""
        layout = self.reader.layout
        if layout is not None:
            return layout
        shape = self.sample_shape
        return "NHWC" if len(shape) == 3 and shape[-1] in (1, 3) and shape[0] not in (1, 3) else "NCHW"

    def batches(
        self, batch_size: int, *, shuffle: bool, seed: int = 0, augment: AugmentSettings | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(x float32 model-ready, y int64) batches covering the set once; the last may be smaller.

        The order depends only on `seed` (the trainer passes base seed + epoch). A stored .npz and an
        image folder are shuffled exactly; a compressed .npz is read front to back and its samples are
        mixed only within windows of a few thousand, so shuffling is approximate there (a file sorted by
        class gives batches of few classes: save it with `np.savez` instead of `np.savez_compressed`).
        """
        if batch_size < 1:
            raise DatasetError(f"The batch size must be at least 1, got {batch_size}.")
        if augment is not None and (augment.shift or augment.flip) and len(self.sample_shape) != 3:
            raise DatasetError(
                f"Shift and flip augmentations need image samples, not samples of shape {self.sample_shape}."
            )
        order_seed, augment_seed = np.random.SeedSequence(seed).spawn(2)
        return self._iter_batches(
            batch_size,
            shuffle,
            np.random.default_rng(order_seed),
            augment,
            np.random.default_rng(augment_seed),
        )

    def _iter_batches(
        self,
        batch_size: int,
        shuffle: bool,
        order_rng: np.random.Generator,
        augment: AugmentSettings | None,
        augment_rng: np.random.Generator,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if self.reader.random_access:
            pieces = self._random_access_batches(batch_size, shuffle, order_rng)
        else:
            pieces = self._streamed_batches(batch_size, shuffle, order_rng)
        for x, chosen in pieces:
            if augment is not None:
                x = augment_batch(x, augment, self.layout, augment_rng)
            yield x, self.all_labels[chosen]

    def _random_access_batches(
        self, batch_size: int, shuffle: bool, rng: np.random.Generator
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = rng.permutation(self.indices) if shuffle else self.indices
        for start in range(0, len(order), batch_size):
            # A batch is a set to the optimizer: read its samples in file order, the cheapest on disk.
            chosen = np.sort(order[start : start + batch_size])
            yield self.reader.read(chosen), chosen

    def _streamed_batches(
        self, batch_size: int, shuffle: bool, rng: np.random.Generator
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        reader = self.reader
        assert isinstance(reader, _NpzArray)
        wanted = np.zeros(reader.count, dtype=bool)
        wanted[self.indices] = True
        chunks = reader.chunks(reader.chunk_samples(), stop=int(self.indices[-1]) + 1)  # a head: no more
        windows = _mixed_windows(chunks, wanted, shuffle, rng)
        for raw, chosen in _rebatched(windows, batch_size):
            yield reader.to_input(raw), chosen

    def split(self, val_fraction: float, seed: int = 0) -> tuple[TrainingData, TrainingData]:
        """(training, validation): disjoint, together all of this set, each class split in proportion.

        Deterministic for a seed. A class with one sample stays in training; validation gets at least
        one sample.
        """
        if not 0 < val_fraction < 1:
            raise DatasetError(f"The validation fraction must be between 0 and 1, got {val_fraction}.")
        if len(self) < 2:
            raise DatasetError(
                f"Splitting off validation data needs at least 2 samples; this part of "
                f"'{Path(self.source).name}' has {len(self)}."
            )
        rng = np.random.default_rng(seed)
        labels = self.labels
        per_class = [rng.permutation(self.indices[labels == label]) for label in np.unique(labels)]
        val_counts = [min(math.floor(len(c) * val_fraction + 0.5), len(c) - 1) for c in per_class]
        if sum(val_counts) == 0:
            largest = max(range(len(per_class)), key=lambda i: len(per_class[i]))
            val_counts[largest] = 1
        val = np.concatenate([c[:n] for c, n in zip(per_class, val_counts, strict=True)])
        train = np.concatenate([c[n:] for c, n in zip(per_class, val_counts, strict=True)])
        return self._subset(np.sort(train)), self._subset(np.sort(val))

    def head(self, count: int) -> TrainingData:
        """The first `count` samples of this set (all of them when it has fewer)."""
        if count < 1:
            raise DatasetError(f"The sample count must be at least 1, got {count}.")
        return self if count >= len(self) else self._subset(self.indices[:count])

    def _subset(self, indices: np.ndarray) -> TrainingData:
        return dataclasses.replace(self, indices=indices.astype(np.int64))

    def fingerprint(self) -> str:
        """A cheap content id for checkpoints: source, its sizes and times, the subset, preprocessing."""
        digest = hashlib.blake2b(digest_size=16)
        preprocess = json.dumps(self.reader.spec.to_dict(), sort_keys=True)
        for text in (os.path.abspath(self.source), self.content_id, preprocess):
            digest.update(text.encode() + b"\0")
        digest.update(np.ascontiguousarray(self.indices, dtype="<i8").tobytes())
        return digest.hexdigest()


def _mixed_windows(
    chunks: Iterable[tuple[int, np.ndarray]], wanted: np.ndarray, shuffle: bool, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(raw samples, their indices, the order to take them in) of the wanted samples, `_WINDOW_CHUNKS`
    chunks at a time; when shuffling, the order mixes the whole window."""
    raws: list[np.ndarray] = []
    chosen: list[np.ndarray] = []
    for position, (start, raw) in enumerate(chunks, start=1):
        keep = wanted[start : start + len(raw)]
        raws.append(raw if keep.all() else raw[keep])
        chosen.append(np.flatnonzero(keep) + start)
        if position % _WINDOW_CHUNKS == 0:
            yield _window(raws, chosen, shuffle, rng)
    if raws:
        yield _window(raws, chosen, shuffle, rng)


def _window(
    raws: list[np.ndarray], chosen: list[np.ndarray], shuffle: bool, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    raw, indices = np.concatenate(raws), np.concatenate(chosen)
    raws.clear()  # the chunks are copied into `raw`: free them while the window is used
    chosen.clear()
    order = rng.permutation(len(indices)) if shuffle else np.arange(len(indices))
    return raw, indices, order  # the order is applied per batch: no second window-sized copy


def _rebatched(
    windows: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], batch_size: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The windows' samples, each in its order, regrouped into batches (the last may be smaller)."""
    held: list[tuple[np.ndarray, np.ndarray]] = []
    held_count = 0
    for raw, indices, order in windows:
        start = 0
        while start < len(order):
            rows = order[start : start + batch_size - held_count]
            held.append((raw[rows], indices[rows]))
            held_count += len(rows)
            start += len(rows)
            if held_count == batch_size:
                yield np.concatenate([r for r, _ in held]), np.concatenate([i for _, i in held])
                held, held_count = [], 0
        del raw, indices, order  # free this window before the next one is read
    if held:
        yield np.concatenate([r for r, _ in held]), np.concatenate([i for _, i in held])


def open_training_data(
    path: str | os.PathLike[str],
    preprocess: PreprocessSpec | Mapping[str, Any] | None,
    model: onnx.ModelProto,
) -> TrainingData:
    """Open a labelled training set without reading its samples; raises DatasetError when it has no
    labels, cannot be read, or its samples do not fit the model's input."""
    spec = preprocess if isinstance(preprocess, PreprocessSpec) else PreprocessSpec.from_dict(preprocess)
    source = Path(path)
    reader, labels, class_names, content_id = _OPENERS[data_kind(source)](source, spec)
    first = reader.read_first()
    fitted = fit_to_model(Dataset(first, None, None, str(source), layout=reader.layout), model)
    notes: tuple[str, ...] = ()
    if reader.layout is None and spec != PreprocessSpec():
        notes = (
            f"'x' in '{source.name}' is already float model input, so the preprocessing is not applied.",
        )
    return TrainingData(
        source=str(source),
        num_classes=len(class_names) if class_names is not None else int(labels.max()) + 1,
        sample_shape=tuple(int(d) for d in first.shape[1:]),
        input_name=fitted.input_name,
        indices=np.arange(len(labels), dtype=np.int64),
        class_names=class_names,
        notes=notes,
        reader=reader,
        all_labels=labels,
        content_id=content_id,
    )


_Opened = tuple[_Reader, np.ndarray, "tuple[str, ...] | None", str]


def _open_npz(path: Path, spec: PreprocessSpec) -> _Opened:
    refuse_special_file(path, "data")  # a pipe would block the read forever
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if "x.npy" not in names:
                found = ", ".join(repr(name.removesuffix(".npy")) for name in names) or "no arrays"
                raise DatasetError(f"'{path.name}' has no array named 'x' (it holds {found}).")
            if "y.npy" not in names:
                raise DatasetError(
                    f"Retraining needs labels: '{path.name}' has no array 'y' of class indices."
                )
            info = archive.getinfo("x.npy")
            check_expansion(info.file_size, info.compress_size, "x", path)  # streamed, but every epoch
            with archive.open(info) as member:
                dtype, shape = _read_npy_header(member, path)
                header_size = member.tell()
            y = _read_member(archive, "y.npy", path, None, lambda dtype, shape: _check_y(dtype, shape, path))
        data_offset = None
        if info.compress_type == zipfile.ZIP_STORED:
            data_offset = _member_data_offset(path, info) + header_size
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"Cannot read '{path.name}' as a .npz archive: {_reason(exc)}.") from None
    _check_x(path, dtype, shape, data_offset)
    stat = path.stat()
    reader = _NpzArray(path, spec, dtype, shape, data_offset)
    return reader, _labels(y, shape[0], path), None, f"{stat.st_size}:{stat.st_mtime_ns}"


def _read_npy_header(member: Any, path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    """dtype and shape of the .npy array `member` is positioned at; leaves it at the array's bytes."""
    version = npy_format.read_magic(member)
    if version == (1, 0):
        shape, fortran_order, dtype = npy_format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, fortran_order, dtype = npy_format.read_array_header_2_0(member)
    else:
        raise DatasetError(f"Array 'x' in '{path.name}' uses .npy version {version}, which is not read.")
    if dtype.hasobject:
        raise DatasetError(
            f"Cannot read '{path.name}' as a .npz archive: {_reason(ValueError('allow_pickle'))}."
        )
    if fortran_order and len(shape) > 1:
        raise DatasetError(
            f"Array 'x' in '{path.name}' is stored in Fortran order, which cannot be read sample by sample; "
            "save it in C order (numpy's default)."
        )
    return dtype, tuple(int(d) for d in shape)


def _member_data_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """Where a stored zip member's bytes start: after its local header, whose name and extra field
    lengths may differ from the central directory's (zipfile does not expose this offset)."""
    with open(path, "rb") as file:
        file.seek(info.header_offset)
        header = file.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise DatasetError(f"Cannot read '{path.name}' as a .npz archive: the entry of 'x' is damaged.")
    _, name_length, extra_length = _LOCAL_HEADER.unpack(header)
    return info.header_offset + _LOCAL_HEADER.size + name_length + extra_length


def _check_x(path: Path, dtype: np.dtype, shape: tuple[int, ...], data_offset: int | None) -> None:
    """The evaluation reader's checks on `x`, made on its header alone."""
    if len(shape) < 2 or shape[0] == 0:
        raise DatasetError(f"Array 'x' in '{path.name}' holds no samples (shape {list(shape)}).")
    if dtype == np.uint8:
        _as_nhwc(np.empty((0, *shape[1:]), np.uint8), path)  # raises for shapes that are not images
    elif not np.issubdtype(dtype, np.floating):
        raise DatasetError(
            f"Array 'x' in '{path.name}' holds {dtype} values; Slimscope reads uint8 images "
            "or float model input."
        )
    if data_offset is not None and data_offset + dtype.itemsize * math.prod(shape) > path.stat().st_size:
        raise DatasetError(f"Array 'x' in '{path.name}' ends early: the file is truncated.")


def _open_image_folder(folder: Path, spec: PreprocessSpec) -> _Opened:
    files, labels, class_names = _list_images(folder)
    if class_names is None:
        raise DatasetError(
            f"Retraining needs labels: the images in '{folder}' are not in class sub-folders; put each "
            "class's images in a sub-folder named after the class."
        )
    first = _read(files[0], folder, spec)
    reader = _ImageFiles(folder, spec, tuple(files), first.shape)
    # A cheap content id: every file's name, size and modification time (nothing is decoded).
    digest = hashlib.blake2b(digest_size=16)
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}\0".encode())
    return reader, np.asarray(labels, dtype=np.int64), class_names, digest.hexdigest()


_OPENERS = {"npz": _open_npz, "image_folder": _open_image_folder}  # keys: `core.data.readers` kinds
