"""Helpers shared by the refusal tests (test_refuse_*.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.reference
import pytest
from onnx import TensorProto, helper, numpy_helper

from slimscope.core.errors import ModelLoadError


def expect_refusal(load, path: Path, error: type[ModelLoadError], *fragments: str, **kwargs) -> str:
    """Load, expecting `error` whose one-line message contains every fragment; return the message."""
    with pytest.raises(error) as caught:
        load(path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def add_weight_model(small_model, weight: TensorProto) -> onnx.ModelProto:
    """y = x + w, x and w of shape [1, 4]."""
    return small_model([helper.make_node("Add", ["x", weight.name], ["y"], name="add")], [weight])


def float_weight(values=(1.0, 2.0, 3.0, 4.0), name: str = "w") -> TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.float32).reshape(1, -1), name)
