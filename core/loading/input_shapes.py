"""Model input shapes: what the file declares, what the user gives (`1x3x224x224`), and their merge."""

from __future__ import annotations

import onnx

from slimscope.core.errors import InputShapeError

Shape = tuple[int | str, ...]


def parse_input_shapes(text: str) -> list[tuple[int, ...]]:
    """`"1x3x224x224"` or `"1x3x224x224,1x10"` (one shape per model input, in order)."""
    shapes = []
    for part in text.replace(" ", "").split(","):
        try:
            dims = tuple(int(d) for d in part.lower().split("x"))
        except ValueError:
            dims = ()
        if not dims or any(d <= 0 for d in dims):
            raise InputShapeError(
                f"'{part}' is not an input shape; write positive sizes joined by 'x', e.g. 1x3x224x224."
            )
        shapes.append(dims)
    return shapes


def declared_input_shapes(model: onnx.ModelProto) -> dict[str, Shape]:
    """Shapes of the graph's real inputs; unknown dims are their symbolic names (or '?')."""
    weights = {t.name for t in model.graph.initializer}
    shapes: dict[str, Shape] = {}
    for value in model.graph.input:
        if value.name in weights or not value.type.HasField("tensor_type"):
            continue
        dims: list[int | str] = []
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims.append(dim.dim_value)
            else:
                dims.append(dim.dim_param or "?")
        shapes[value.name] = tuple(dims)
    return shapes


def merge_input_shapes(declared: dict[str, Shape], given: list[tuple[int, ...]] | None) -> dict[str, Shape]:
    """The user's shapes replace the declared ones, after checking they fit."""
    if not given:
        return declared
    if len(given) != len(declared):
        raise InputShapeError(
            f"The model has {len(declared)} input(s) ({', '.join(declared)}) but {len(given)} shape(s) were given."
        )
    merged: dict[str, Shape] = {}
    for (name, old), new in zip(declared.items(), given, strict=True):
        if old and len(old) != len(new):
            raise InputShapeError(
                f"Input '{name}' has {len(old)} dimensions ({_show(old)}); the shape given, {_show(new)}, has {len(new)}."
            )
        for axis, (a, b) in enumerate(zip(old, new, strict=False)):
            if isinstance(a, int) and a != b:
                raise InputShapeError(
                    f"Input '{name}' has size {a} on axis {axis} ({_show(old)}); the shape given, {_show(new)}, says {b}."
                )
        merged[name] = new
    return merged


def concrete_shapes(shapes: dict[str, Shape], batch: int = 1) -> dict[str, tuple[int, ...]] | None:
    """Shapes with a symbolic leading (batch) dim set to `batch`; None if other dims are unknown."""
    result = {}
    for name, dims in shapes.items():
        fixed = [batch if (axis == 0 and not isinstance(d, int)) else d for axis, d in enumerate(dims)]
        if not all(isinstance(d, int) for d in fixed):
            return None
        result[name] = tuple(int(d) for d in fixed)
    return result


def _show(shape: Shape) -> str:
    return "x".join(str(d) for d in shape)


# A free size other than the batch, when neither the user nor the data says better: the common input
# side of ImageNet-trained vision models. Only ever a suggestion the user sees before it is used.
GUESSED_FREE_SIZE = 224


def leaves_size_open(shapes: dict[str, Shape]) -> bool:
    """True when a dim other than the batch is free: MACs then need a size from the user or the data."""
    return bool(shapes) and concrete_shapes(shapes) is None


def shapes_from_sample(
    declared: dict[str, Shape], sample_shape: tuple[int, ...]
) -> dict[str, tuple[int, ...]]:
    """Concrete input shapes for one data sample (batch 1) of a one-input model: free dims take the
    sample's sizes. Empty when they do not fit (several inputs, another rank, a fixed size that differs)."""
    if len(declared) != 1:
        return {}
    ((name, dims),) = declared.items()
    shape = (1, *sample_shape)
    if len(dims) != len(shape) or any(
        isinstance(d, int) and d != s for d, s in zip(dims[1:], shape[1:], strict=True)
    ):
        return {}
    return {name: tuple(int(s) for s in shape)}


def shapes_for_data(
    declared: dict[str, Shape], sample_shape: tuple[int, ...] | None
) -> dict[str, tuple[int, ...]]:
    """The concrete shapes MACs are counted at: the declared ones when fixed (batch 1), else the data's."""
    fixed = concrete_shapes(declared)
    if fixed is not None or sample_shape is None:
        return fixed or {}
    return shapes_from_sample(declared, sample_shape)


def guess_input_shapes(
    declared: dict[str, Shape], sample_shape: tuple[int, ...] | None = None
) -> dict[str, tuple[int, ...]]:
    """A first answer to "which input size?": the data's when it fits, else the declared sizes with a
    free batch of 1 and `GUESSED_FREE_SIZE` for every other free dim."""
    from_data = shapes_for_data(declared, sample_shape)
    if from_data:
        return from_data
    return {
        name: tuple(
            d if isinstance(d, int) else (1 if axis == 0 else GUESSED_FREE_SIZE)
            for axis, d in enumerate(dims)
        )
        for name, dims in declared.items()
    }
