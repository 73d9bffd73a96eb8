"""Training data read from disk batch by batch: memory-mapped and streamed .npz files, image folders,
splits, shuffling and augmentations, and the same checks and preprocessing as the evaluation readers."""

from __future__ import annotations

import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from slimscope.core.data import load_dataset
from slimscope.core.errors import DatasetError, RecipeError
from slimscope.core.loading import load_model
from slimscope.core.recipe import parse_recipe
from slimscope.core.train import train_data as train_data_module
from slimscope.core.train.train_data import TrainingData, open_training_data
from slimscope.core.train.train_spec import AugmentSettings

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"


def identity_model(*sample_dims: int) -> onnx.ModelProto:
    """A model whose one float input takes [N, *sample_dims]; only its input matters here."""
    shape = ["N", *sample_dims]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["input"], ["output"])],
        "identity",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def numbered_samples(count: int, height: int = 8, width: int = 8) -> np.ndarray:
    """Float samples [count, 1, H, W] whose every value is the sample's own index."""
    return np.broadcast_to(np.arange(count, dtype=np.float32)[:, None, None, None], (count, 1, height, width))


def write_npz(path: Path, compressed: bool, **arrays: np.ndarray) -> Path:
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return path


def collect(data: TrainingData, batch_size: int = 7, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    batches = list(data.batches(batch_size, shuffle=kwargs.pop("shuffle", False), **kwargs))
    for x, y in batches:
        assert x.dtype == np.float32 and y.dtype == np.int64 and len(x) == len(y) <= batch_size
        assert x.shape[1:] == data.sample_shape
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])


def sample_ids(x: np.ndarray) -> np.ndarray:
    ids = x.reshape(len(x), -1)
    assert (ids == ids[:, :1]).all(), "a sample was mixed with another"
    return ids[:, 0].astype(np.int64)


# --- .npz: stored (memory-mapped) and compressed (streamed) --------------------------------------------


def test_stored_npz_is_memory_mapped_not_read_whole(tmp_path: Path) -> None:
    count = 2000  # 8 MB of float32 samples
    x = numbered_samples(count, 32, 32)
    path = write_npz(tmp_path / "big.npz", False, x=x, y=np.arange(count) % 10)
    next(open_training_data(path, None, identity_model(1, 32, 32)).batches(16, shuffle=True))  # imports
    tracemalloc.start()
    try:
        data = open_training_data(path, None, identity_model(1, 32, 32))
        first_x, first_y = next(data.batches(16, shuffle=True, seed=3))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < x.nbytes / 16, f"{peak} bytes allocated to read 16 samples of a {x.nbytes}-byte array"
    ids = sample_ids(first_x)
    assert len(set(ids)) == 16 and (first_y == ids % 10).all()
    np.testing.assert_array_equal(first_x, x[ids])


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_yields_every_sample_once_per_epoch(tmp_path: Path, monkeypatch, compressed: bool) -> None:
    monkeypatch.setattr(train_data_module, "_CHUNK_SAMPLES", 5)  # many chunks and windows
    count = 103
    path = write_npz(tmp_path / "d.npz", compressed, x=numbered_samples(count), y=np.arange(count) % 4)
    data = open_training_data(path, None, identity_model(1, 8, 8))
    assert len(data) == count and data.num_classes == 4 and data.sample_shape == (1, 8, 8)
    assert data.input_name == "input"
    for seed in (0, 1):
        x, y = collect(data, 8, shuffle=True, seed=seed)
        ids = sample_ids(x)
        assert sorted(ids) == list(range(count))
        assert (y == ids % 4).all()
    assert sorted(sample_ids(collect(data.head(9), 4, shuffle=True)[0])) == list(range(9))
    train, val = data.split(0.25, seed=2)
    for part in (train, val):
        x, y = collect(part, 6, shuffle=True, seed=5)
        ids = sample_ids(x)
        assert sorted(ids) == part.indices.tolist() and (y == ids % 4).all()


def test_compressed_npz_is_streamed_in_chunks(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(train_data_module, "_CHUNK_SAMPLES", 25)  # windows of 100 samples, 400 kB
    count = 2000
    x = numbered_samples(count, 32, 32)
    path = write_npz(tmp_path / "big.npz", True, x=x, y=np.arange(count) % 10)
    data = open_training_data(path, None, identity_model(1, 32, 32))
    next(data.batches(64, shuffle=True))  # the first run imports what it needs
    tracemalloc.start()
    try:
        seen = [sample_ids(batch) for batch, _ in data.batches(64, shuffle=True, seed=1)]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < x.nbytes / 4, f"{peak} bytes allocated while streaming a {x.nbytes}-byte array"
    assert sorted(np.concatenate(seen)) == list(range(count))
    assert not np.array_equal(np.concatenate(seen), np.arange(count))  # shuffled within windows


@pytest.mark.parametrize("compressed", [False, True])
def test_uint8_images_are_preprocessed_like_the_evaluation_reader(tmp_path: Path, compressed: bool) -> None:
    images = np.random.default_rng(0).integers(0, 256, (11, 9, 7), dtype=np.uint8)  # [N, H, W]
    labels = np.arange(11) % 3
    path = write_npz(tmp_path / "raw.npz", compressed, x=images, y=labels)
    preprocess = {"resize": 6, "center_crop": 5, "mean": [0.5], "std": [0.25]}
    expected = load_dataset(path, preprocess)
    data = open_training_data(path, preprocess, identity_model(1, 5, 5))
    assert data.sample_shape == expected.sample_shape == (1, 5, 5)
    x, y = collect(data, 4)
    np.testing.assert_array_equal(x, expected.x)
    np.testing.assert_array_equal(y, labels)


def test_demo_test_set_fits_the_demo_network() -> None:
    model = load_model(DEMO / "digits_net.onnx").model
    data = open_training_data(DEMO / "digits_test.npz", None, model)
    assert data.num_classes == 10 and data.sample_shape == (1, 28, 28) and len(data) == 1000
    x, y = collect(data, 256, shuffle=True, seed=0)
    with np.load(DEMO / "digits_test.npz") as archive:
        by_content = {row.tobytes(): label for row, label in zip(archive["x"], archive["y"], strict=True)}
    assert len(x) == 1000 and [by_content[row.tobytes()] for row in x] == y.tolist()


# --- image folders ----------------------------------------------------------------------------------


def write_class_folders(root: Path, counts: dict[str, int], size: tuple[int, int] = (6, 8)) -> Path:
    rng = np.random.default_rng(1)
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for index in range(count):
            pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{index}.png")
    return root


def test_image_folder_batches_equal_the_evaluation_reader(tmp_path: Path) -> None:
    folder = write_class_folders(tmp_path / "images", {"cat": 3, "dog": 2, "eel": 4})
    preprocess = {"resize": 4, "mean": [0.5, 0.4, 0.3], "layout": "NHWC"}
    expected = load_dataset(folder, preprocess)
    data = open_training_data(folder, preprocess, identity_model(4, 5, 3))
    assert data.class_names == ("cat", "dog", "eel") and data.num_classes == 3
    x, y = collect(data, 2)
    np.testing.assert_array_equal(x, expected.x)
    np.testing.assert_array_equal(y, expected.y)


def test_image_of_another_size_in_a_later_batch_is_named(tmp_path: Path) -> None:
    folder = write_class_folders(tmp_path / "images", {"a": 2, "b": 2})
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(folder / "b" / "odd.png")
    data = open_training_data(folder, None, identity_model(3, 6, 8))
    with pytest.raises(DatasetError, match=r"differ in size.*'b/odd\.png'"):
        collect(data, 2)


# --- split, shuffle, head, fingerprint ----------------------------------------------------------------


def labelled_npz(tmp_path: Path, labels: list[int], compressed: bool = False) -> TrainingData:
    count = len(labels)
    path = write_npz(tmp_path / "s.npz", compressed, x=numbered_samples(count, 2, 2), y=np.asarray(labels))
    return open_training_data(path, None, identity_model(1, 2, 2))


def test_split_is_stratified_disjoint_deterministic_and_complete(tmp_path: Path) -> None:
    data = labelled_npz(tmp_path, [0] * 30 + [1] * 10 + [2])
    train, val = data.split(0.2, seed=7)
    assert np.bincount(val.labels, minlength=3).tolist() == [6, 2, 0]  # the lone class stays in training
    assert np.bincount(train.labels, minlength=3).tolist() == [24, 8, 1]
    assert not set(train.indices) & set(val.indices)
    assert sorted([*train.indices, *val.indices]) == list(range(41))
    again_train, again_val = data.split(0.2, seed=7)
    assert np.array_equal(again_val.indices, val.indices) and np.array_equal(
        again_train.indices, train.indices
    )
    assert not np.array_equal(data.split(0.2, seed=8)[1].indices, val.indices)
    assert collect(val)[1].tolist() == val.labels.tolist()


def test_split_of_tiny_sets_keeps_both_sides_and_refuses_bad_fractions(tmp_path: Path) -> None:
    train, val = labelled_npz(tmp_path, [0, 1, 2]).split(0.1)
    assert len(train) == 2 and len(val) == 1
    data = labelled_npz(tmp_path, [0, 0, 1, 1])
    for fraction in (0.0, 1.0, -0.5):
        with pytest.raises(DatasetError, match="between 0 and 1"):
            data.split(fraction)
    with pytest.raises(DatasetError, match="at least 2"):
        data.head(1).split(0.5)


@pytest.mark.parametrize("compressed", [False, True])
def test_shuffle_depends_only_on_the_seed(tmp_path: Path, compressed: bool) -> None:
    data = labelled_npz(tmp_path, list(range(5)) * 12, compressed)
    order = {seed: sample_ids(collect(data, 8, shuffle=True, seed=seed)[0]).tolist() for seed in (0, 1)}
    assert order[0] == sample_ids(collect(data, 8, shuffle=True, seed=0)[0]).tolist()
    assert order[0] != order[1]
    assert sample_ids(collect(data, 8)[0]).tolist() == list(range(60))  # no shuffle: file order


def test_head_and_fingerprint(tmp_path: Path) -> None:
    data = labelled_npz(tmp_path, [0, 1] * 10)
    head = data.head(5)
    assert head.indices.tolist() == [0, 1, 2, 3, 4] and data.head(100) is data
    assert sample_ids(collect(head)[0]).tolist() == [0, 1, 2, 3, 4]
    train, val = data.split(0.5)
    prints = {data.fingerprint(), head.fingerprint(), train.fingerprint(), val.fingerprint()}
    assert len(prints) == 4
    path = Path(data.source)
    assert open_training_data(path, None, identity_model(1, 2, 2)).fingerprint() == data.fingerprint()
    write_npz(path, False, x=numbered_samples(21, 2, 2), y=np.arange(21) % 2)
    assert open_training_data(path, None, identity_model(1, 2, 2)).fingerprint() != data.fingerprint()


def test_pickled_training_data_holds_no_samples(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "d.npz", False, x=numbered_samples(500, 16, 16), y=np.arange(500) % 2)
    data = open_training_data(path, None, identity_model(1, 16, 16))
    copy = pickle.loads(pickle.dumps(data))
    assert len(pickle.dumps(data)) < 500 * 16 * 16 * 4 / 10
    np.testing.assert_array_equal(collect(copy)[0], collect(data)[0])


# --- augmentation ---------------------------------------------------------------------------------------


def test_augment_shift_moves_content_and_keeps_shape(tmp_path: Path) -> None:
    x = np.zeros((64, 1, 9, 9), np.float32)
    x[:, 0, 4, 4] = 1.0
    path = write_npz(tmp_path / "dots.npz", False, x=x, y=np.zeros(64, np.int64))
    data = open_training_data(path, None, identity_model(1, 9, 9))
    shifted, _ = collect(data, 64, augment=AugmentSettings(shift=2), seed=4)
    assert shifted.shape == x.shape and (shifted.sum(axis=(1, 2, 3)) == 1.0).all()
    positions = {tuple(np.argwhere(sample[0] == 1.0)[0]) for sample in shifted}
    assert len(positions) > 5 and all(2 <= row <= 6 and 2 <= col <= 6 for row, col in positions)
    again, _ = collect(data, 64, augment=AugmentSettings(shift=2), seed=4)
    np.testing.assert_array_equal(again, shifted)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_augment_flip_mirrors_the_width_axis(tmp_path: Path, layout: str) -> None:
    images = np.zeros((40, 5, 7), np.uint8)
    images[:, :, 0] = 255  # the left column lit
    path = write_npz(tmp_path / "edge.npz", False, x=images, y=np.zeros(40, np.int64))
    dims = (1, 5, 7) if layout == "NCHW" else (5, 7, 1)
    data = open_training_data(path, {"layout": layout}, identity_model(*dims))
    plain, _ = collect(data, 40)
    flipped, _ = collect(data, 40, augment=AugmentSettings(flip=True))
    width_axis = 3 if layout == "NCHW" else 2
    mirrored = np.flip(plain, axis=width_axis)
    is_mirrored = [np.array_equal(f, m) for f, m in zip(flipped, mirrored, strict=True)]
    is_plain = [np.array_equal(f, p) for f, p in zip(flipped, plain, strict=True)]
    assert all(a != b for a, b in zip(is_mirrored, is_plain, strict=True))
    assert 5 < sum(is_mirrored) < 35


def test_augment_noise_and_settings_checks(tmp_path: Path) -> None:
    data = labelled_npz(tmp_path, [0] * 200)
    plain, _ = collect(data, 50)
    noisy, _ = collect(data, 50, augment=AugmentSettings(noise=0.5))
    assert abs(float((noisy - plain).std()) - 0.5) < 0.05
    recipe = parse_recipe({"version": 1, "training": {"augment": {"shift": 2}}})
    assert recipe.training.augment == AugmentSettings(shift=2)
    for bad in ({"shift": -1}, {"shift": 1.5}, {"noise": -0.1}, {"flip": "yes"}, {"rotate": 10}):
        with pytest.raises(RecipeError, match="training.augment"):
            parse_recipe({"version": 1, "training": {"augment": bad}})


def test_shift_needs_image_samples(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "flat.npz", False, x=np.zeros((4, 6), np.float32), y=np.zeros(4, np.int64))
    data = open_training_data(path, None, identity_model(6))
    with pytest.raises(DatasetError, match="image samples"):
        data.batches(2, shuffle=False, augment=AugmentSettings(shift=1))


# --- refusals -------------------------------------------------------------------------------------------


def test_unlabelled_data_is_refused(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "nolabels.npz", False, x=numbered_samples(4))
    with pytest.raises(DatasetError, match=r"^Retraining needs labels: 'nolabels\.npz' has no array 'y'"):
        open_training_data(path, None, identity_model(1, 8, 8))
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(flat / "a.png")
    with pytest.raises(DatasetError, match=r"^Retraining needs labels: .*class sub-folders"):
        open_training_data(flat, None, identity_model(1, 8, 8))


def test_samples_that_do_not_fit_the_model_are_refused(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "d.npz", True, x=numbered_samples(4), y=np.zeros(4, np.int64))
    with pytest.raises(DatasetError, match=r"^The data has 1-channel 8x8 images; the model expects 1x4x4\.$"):
        open_training_data(path, None, identity_model(1, 4, 4))
    raw = write_npz(tmp_path / "raw.npz", False, x=np.zeros((4, 8, 8), np.uint8), y=np.zeros(4, np.int64))
    with pytest.raises(DatasetError, match=r"layout to NHWC\)\.$"):
        open_training_data(raw, None, identity_model(8, 8, 1))


def test_bad_npz_contents_are_refused(tmp_path: Path) -> None:
    model = identity_model(1, 8, 8)
    cases = {
        "no_x.npz": {"z": np.zeros(3), "y": np.zeros(3, np.int64)},
        "ints.npz": {"x": np.zeros((3, 1, 8, 8), np.int32), "y": np.zeros(3, np.int64)},
        "labels.npz": {"x": numbered_samples(3), "y": np.zeros(2, np.int64)},
        "objects.npz": {"x": np.array([None, 1], dtype=object), "y": np.zeros(2, np.int64)},
    }
    for name, arrays in cases.items():
        path = tmp_path / name
        np.savez(path, **arrays, allow_pickle=True) if name == "objects.npz" else np.savez(path, **arrays)
        with pytest.raises(DatasetError, match=f"'{name}'"):
            open_training_data(path, None, model)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="is not a NumPy .npz archive"):
        open_training_data(tmp_path / "junk.npz", None, model)
    nan = numbered_samples(3).copy()
    nan[2] = np.nan
    data = open_training_data(
        write_npz(tmp_path / "nan.npz", False, x=nan, y=np.zeros(3, np.int64)), None, model
    )
    with pytest.raises(DatasetError, match="NaN"):
        collect(data, 1)
