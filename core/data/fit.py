"""Check that data fits a model's input before anything runs, and say in one sentence what to change."""

from __future__ import annotations

import onnx

from slimscope.core.data.dataset import Dataset
from slimscope.core.errors import DatasetError

# Input element types the float32 data can be cast to when it is fed.
FLOAT_TYPES = frozenset(
    {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
)

Dims = tuple[int | None, ...]  # None: a dynamic (named or unknown) dim


def model_input(model: onnx.ModelProto) -> tuple[str, int, Dims | None]:
    """(name, element type, dims or None when unknown) of the model's one data input."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(repr(value.name) for value in inputs)
        raise DatasetError(
            f"The model has {len(inputs)} inputs ({names}); Slimscope feeds data to models with one input."
        )
    value = inputs[0]
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return value.name, tensor_type.elem_type, None
    dims = tuple(
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor_type.shape.dim
    )
    return value.name, tensor_type.elem_type, dims


def fit_to_model(dataset: Dataset, model: onnx.ModelProto) -> Dataset:
    """The dataset matched to the model's input; raises DatasetError when its samples do not fit."""
    name, elem_type, dims = model_input(model)
    if elem_type not in FLOAT_TYPES:
        type_name = onnx.TensorProto.DataType.Name(elem_type).lower()
        raise DatasetError(f"The model's input '{name}' takes {type_name} values, not float image data.")
    if dims is not None and not _fits(dataset.sample_shape, dims[1:]):
        raise DatasetError(
            f"The data has {_describe(dataset)}; the model expects {_expected(dims)}{_hint(dataset, dims)}."
        )
    return dataset.with_input_name(name)


def _fits(sample: tuple[int, ...], dims: Dims) -> bool:
    return len(sample) == len(dims) and all(d is None or d == s for s, d in zip(sample, dims, strict=True))


def _channels_hw(shape: tuple[int, ...], layout: str) -> tuple[int, int, int]:
    return (shape[0], shape[1], shape[2]) if layout == "NCHW" else (shape[2], shape[0], shape[1])


def _describe(dataset: Dataset) -> str:
    shape = dataset.sample_shape
    if len(shape) != 3:
        return f"samples of shape {_join(shape)}"
    channels, height, width = _channels_hw(shape, dataset.layout or "NCHW")
    return f"{channels}-channel {height}x{width} images"


def _expected(dims: Dims) -> str:
    text = _join(dims[1:]) if len(dims) > 1 else "scalars"
    return f"{text} ({len(dims)}-D input with the batch first)" if len(dims) != 4 else text


def _join(dims: tuple) -> str:
    return "x".join("?" if d is None else str(d) for d in dims)


def _hint(dataset: Dataset, dims: Dims) -> str:
    """What to change in the preprocessing, when Slimscope built the data from images."""
    shape = dataset.sample_shape
    if dataset.layout is None or len(shape) != 3 or len(dims) != 4:
        return ""
    other = "NHWC" if dataset.layout == "NCHW" else "NCHW"
    channels, height, width = _channels_hw(shape, dataset.layout)
    model_dims = tuple(dims[1:])
    want_c, want_h, want_w = _channels_hw(model_dims, dataset.layout)  # type: ignore[arg-type]
    flipped = _channels_hw(model_dims, other)  # type: ignore[arg-type]
    changes = []
    if want_c not in (1, 3, None) and flipped[0] in (1, 3):
        changes.append(f"layout to {other}")
        want_c, want_h, want_w = flipped
    if want_c is not None and want_c != channels and want_c in (1, 3):
        changes.append(f"grayscale to {'true' if want_c == 1 else 'false'}")
    if (want_h is not None and want_h != height) or (want_w is not None and want_w != width):
        changes.append(f"resize or center_crop to {want_h or height}x{want_w or width}")
    return f" (set the preprocessing's {', '.join(changes)})" if changes else ""
