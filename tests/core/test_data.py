"""Reading evaluation data: .npz files and image folders, preprocessing, and fitting data to a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper
from PIL import Image

from slimscope.core.data import (
    Dataset,
    PreprocessSpec,
    fit_to_model,
    iter_load_dataset,
    load_dataset,
)
from slimscope.core.errors import DatasetError
from slimscope.core.loading import load_model
from slimscope.core.tasks import Progress

DEMO = Path(__file__).resolve().parents[2] / "resources" / "demo"


@pytest.fixture(scope="module")
def demo_model():
    return load_model(DEMO / "digits_net.onnx").model


def save_png(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def uniform(value: int | tuple[int, int, int], height: int = 6, width: int = 8) -> np.ndarray:
    channels = 1 if isinstance(value, int) else 3
    shape = (height, width) if channels == 1 else (height, width, 3)
    return np.broadcast_to(np.asarray(value, dtype=np.uint8), shape).copy()


# --- .npz ------------------------------------------------------------------------------------------


def test_demo_npz_with_labels() -> None:
    data = load_dataset(DEMO / "digits_test.npz")
    assert data.x.shape == (1000, 1, 28, 28) and data.x.dtype == np.float32
    assert data.y is not None and data.y.dtype == np.int64 and set(np.unique(data.y)) == set(range(10))
    assert data.input_name is None and data.source.endswith("digits_test.npz")
    assert data.x.min() >= 0.0 and data.x.max() <= 1.0


def test_npz_without_labels_and_limit(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((5, 3, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x)
    data = load_dataset(tmp_path / "d.npz", limit=3)
    assert data.y is None and len(data) == 3
    np.testing.assert_array_equal(data.x, x[:3])


def test_npz_uint8_images_are_preprocessed(tmp_path: Path) -> None:
    images = np.zeros((2, 4, 4), dtype=np.uint8)
    images[1] = 255
    np.savez(tmp_path / "g.npz", x=images, y=np.array([0, 1]))
    data = load_dataset(tmp_path / "g.npz", {"mean": [0.5], "std": [0.5]})
    assert data.x.shape == (2, 1, 4, 4) and data.layout == "NCHW"
    np.testing.assert_allclose(data.x[0], -1.0)
    np.testing.assert_allclose(data.x[1], 1.0)


def test_float_npz_ignores_preprocessing_and_says_so(tmp_path: Path) -> None:
    np.savez(tmp_path / "f.npz", x=np.ones((2, 1, 2, 2), np.float32))
    data = load_dataset(tmp_path / "f.npz", {"mean": [0.5]})
    np.testing.assert_array_equal(data.x, 1.0)
    assert data.notes and "not applied" in data.notes[0]


def test_fingerprint_follows_content(tmp_path: Path) -> None:
    x = np.zeros((3, 1, 2, 2), np.float32)
    first = Dataset(x, np.array([0, 1, 2]), None, "a")
    same = Dataset(x.copy(), np.array([0, 1, 2]), None, "b")
    other_label = Dataset(x, np.array([0, 1, 1]), None, "a")
    unlabelled = Dataset(x, None, None, "a")
    assert first.fingerprint == same.fingerprint
    assert len({first.fingerprint, other_label.fingerprint, unlabelled.fingerprint}) == 3
    with pytest.raises(ValueError):
        first.x[0, 0, 0, 0] = 1.0  # read-only, so the cached fingerprint cannot go stale
    x[0, 0, 0, 0] = 1.0  # the caller's own array stays writable


# --- image folders ---------------------------------------------------------------------------------


def test_class_folders_give_sorted_labels(tmp_path: Path) -> None:
    for index in range(3):
        save_png(tmp_path / "dog" / f"{index}.png", uniform(200))
        save_png(tmp_path / "cat" / f"{index}.png", uniform(10))
    data = load_dataset(tmp_path)
    assert data.class_names == ("cat", "dog")
    assert data.x.shape == (6, 1, 6, 8)
    assert data.y is not None
    for sample, label in zip(data.x, data.y, strict=True):
        assert sample.mean() == pytest.approx((10 if label == 0 else 200) / 255)
    limited = load_dataset(tmp_path, limit=2)  # classes take turns: a limit still covers each
    assert limited.y is not None and sorted(limited.y.tolist()) == [0, 1]


def test_flat_folder_is_unlabelled(tmp_path: Path) -> None:
    save_png(tmp_path / "a.png", uniform((1, 2, 3)))
    save_png(tmp_path / "b.jpg", uniform((4, 5, 6)))
    (tmp_path / "notes.txt").write_text("not an image")
    data = load_dataset(tmp_path)
    assert data.y is None and data.class_names is None
    assert data.x.shape == (2, 3, 6, 8)


def test_preprocessing_on_known_pixels(tmp_path: Path) -> None:
    rows, cols = np.mgrid[0:6, 0:8]
    pixels = np.stack([rows * 10 + cols, 100 + rows, 200 + cols], axis=-1).astype(np.uint8)
    save_png(tmp_path / "img" / "a.png", pixels)
    spec = {
        "center_crop": [2, 4],
        "scale": 1.0,
        "mean": [1.0, 2.0, 3.0],
        "std": [2.0, 4.0, 8.0],
        "channel_order": "BGR",
        "layout": "NHWC",
    }
    data = load_dataset(tmp_path / "img", spec)
    assert data.x.shape == (1, 2, 4, 3) and data.layout == "NHWC"
    crop = pixels[2:4, 2:6].astype(np.float32)  # centred: rows 2-3 of 6, columns 2-5 of 8
    expected = ((crop - [1.0, 2.0, 3.0]) / [2.0, 4.0, 8.0])[..., ::-1]
    np.testing.assert_allclose(data.x[0], expected, rtol=1e-6)


def test_resize_shorter_side_and_exact(tmp_path: Path) -> None:
    save_png(tmp_path / "a.png", uniform((30, 60, 90), height=20, width=40))
    shorter = load_dataset(tmp_path, {"resize": 10})
    assert shorter.x.shape == (1, 3, 10, 20)
    np.testing.assert_allclose(shorter.x[0, :, 0, 0], np.array([30, 60, 90]) / 255, rtol=1e-6)
    exact = load_dataset(tmp_path, {"resize": [5, 7], "center_crop": 4})
    assert exact.x.shape == (1, 3, 4, 4)


def test_grayscale_conversion(tmp_path: Path) -> None:
    save_png(tmp_path / "rgb.png", uniform((255, 0, 0)))
    data = load_dataset(tmp_path, {"grayscale": True, "scale": 1.0})
    assert data.x.shape == (1, 1, 6, 8)
    np.testing.assert_allclose(data.x, 76.0)  # ITU-R 601-2 luma of pure red, as Pillow computes it


def test_mixed_gray_and_colour_images_become_rgb(tmp_path: Path) -> None:
    save_png(tmp_path / "a.png", uniform(50))
    save_png(tmp_path / "b.png", uniform((1, 2, 3)))
    data = load_dataset(tmp_path, {"scale": 1.0})
    assert data.x.shape == (2, 3, 6, 8)
    np.testing.assert_allclose(data.x[0, :, 0, 0], [50, 50, 50])


def test_folder_reading_yields_progress_and_can_stop(tmp_path: Path) -> None:
    for index in range(70):
        save_png(tmp_path / f"{index:02}.png", uniform(index))
    task = iter_load_dataset(tmp_path)
    progress = [next(task), next(task)]
    assert all(isinstance(item, Progress) for item in progress)
    task.close()  # stopping mid-folder is allowed
    steps = []
    task = iter_load_dataset(tmp_path)
    while True:
        try:
            steps.append(next(task))
        except StopIteration as stop:
            assert len(stop.value) == 70
            break
    assert len(steps) >= 2


# --- errors ----------------------------------------------------------------------------------------


def error_of(path: Path, preprocess=None) -> str:
    with pytest.raises(DatasetError) as info:
        load_dataset(path, preprocess)
    return str(info.value)


def test_missing_and_unsupported(tmp_path: Path) -> None:
    assert "does not exist" in error_of(tmp_path / "nothing.npz")
    (tmp_path / "table.csv").write_text("1,2\n")
    assert ".npz" in error_of(tmp_path / "table.csv")


def test_npz_without_x(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 2)))
    assert error_of(tmp_path / "d.npz") == "'d.npz' has no array named 'x' (it holds 'images')."


def test_npz_that_is_not_an_archive_or_holds_objects(tmp_path: Path) -> None:
    (tmp_path / "bad.npz").write_bytes(b"not a zip file")
    assert "'bad.npz' is not a NumPy .npz archive" in error_of(tmp_path / "bad.npz")
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}, None], dtype=object))
    assert "unpickling" in error_of(tmp_path / "obj.npz")


def test_npz_with_bad_labels(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 1, 2, 2), np.float32), y=np.array([0, 1]))
    assert "one class index per sample (3)" in error_of(tmp_path / "d.npz")


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    save_png(tmp_path / "cls" / "good.png", uniform(1))
    (tmp_path / "cls" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    message = error_of(tmp_path)
    assert message.startswith("Cannot read image 'cls/broken.png'")


def test_empty_and_imageless_folders(tmp_path: Path) -> None:
    assert "holds no images" in error_of(tmp_path)
    (tmp_path / "readme.txt").write_text("hello")
    (tmp_path / "empty_class").mkdir()
    assert "holds no images" in error_of(tmp_path)


def test_folder_mixing_loose_images_and_classes(tmp_path: Path) -> None:
    save_png(tmp_path / "loose.png", uniform(1))
    save_png(tmp_path / "cls" / "a.png", uniform(1))
    assert "mixes images and class sub-folders" in error_of(tmp_path)


def test_images_of_different_sizes(tmp_path: Path) -> None:
    save_png(tmp_path / "a.png", uniform(1, 6, 8))
    save_png(tmp_path / "b.png", uniform(1, 5, 8))
    message = error_of(tmp_path)
    assert "differ in size (6x8 in 'a.png', 5x8 in 'b.png')" in message and "resize" in message


def test_crop_larger_than_image(tmp_path: Path) -> None:
    save_png(tmp_path / "a.png", uniform(1, 6, 8))
    assert "smaller than the 10x10 centre crop" in error_of(tmp_path, {"center_crop": 10})


def test_bad_preprocessing(tmp_path: Path) -> None:
    save_png(tmp_path / "a.png", uniform((1, 2, 3)))
    assert "field 'layout'" in error_of(tmp_path, {"layout": "HWC"})
    assert "'mean' has 2 values but the images have 3 channels" in error_of(tmp_path, {"mean": [0.1, 0.2]})
    with pytest.raises(DatasetError):
        PreprocessSpec.from_dict({"resize": 0})


def test_spec_round_trip() -> None:
    raw = {"resize": 256, "center_crop": [224, 224], "mean": [0.485, 0.456, 0.406], "layout": "NHWC"}
    spec = PreprocessSpec.from_dict(raw)
    assert spec.center_crop == (224, 224) and spec.mean == (0.485, 0.456, 0.406)
    assert spec.to_dict() == raw
    assert PreprocessSpec.from_dict(None) == PreprocessSpec()


# --- fitting data to a model -----------------------------------------------------------------------


def test_fit_sets_input_name_and_keeps_fingerprint(demo_model) -> None:
    data = load_dataset(DEMO / "digits_test.npz", limit=10)
    fingerprint = data.fingerprint
    fitted = fit_to_model(data, demo_model)
    assert fitted.input_name == "input" and fitted.fingerprint == fingerprint and len(fitted) == 10


def test_fit_mismatch_says_what_to_change(tmp_path: Path, demo_model) -> None:
    save_png(tmp_path / "a.png", uniform((1, 2, 3), 32, 32))
    with pytest.raises(DatasetError) as info:
        fit_to_model(load_dataset(tmp_path), demo_model)
    assert str(info.value) == (
        "The data has 3-channel 32x32 images; the model expects 1x28x28 "
        "(set the preprocessing's grayscale to true, resize or center_crop to 28x28)."
    )
    nhwc = load_dataset(tmp_path, {"layout": "NHWC", "grayscale": True, "resize": 28})
    with pytest.raises(DatasetError, match=r"1-channel 28x28 images.*layout to NCHW\)\.$"):
        fit_to_model(nhwc, demo_model)


def test_fit_rank_mismatch_and_float_data(demo_model) -> None:
    flat = Dataset(np.zeros((2, 784), np.float32), None, None, "flat")
    with pytest.raises(
        DatasetError, match=r"^The data has samples of shape 784; the model expects 1x28x28\.$"
    ):
        fit_to_model(flat, demo_model)


def test_fit_refuses_models_with_two_inputs() -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["c"])],
        "two",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2]) for n in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 2])],
    )
    model = helper.make_model(graph)
    with pytest.raises(DatasetError, match="2 inputs"):
        fit_to_model(Dataset(np.zeros((1, 2), np.float32), None, None, "d"), model)
