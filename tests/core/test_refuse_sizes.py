"""Sizes a file only claims are refused before anything is allocated, and damaged stored values are caught."""

from __future__ import annotations

import resource
import time
import tracemalloc

import numpy as np
import onnx
import onnx.reference
import pytest
from onnx import TensorProto, helper, numpy_helper
from refusal_support import add_weight_model, expect_refusal, float_weight

from slimscope.core.errors import ModelLoadError

# ---------------------------------------------------------------------------------------------------
# Sizes a file only claims are refused before anything is allocated


class _AllocationWatch:
    """Peak traced memory and growth of the process's maximum resident size while the block runs."""

    def __enter__(self):
        self.rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        self.started = time.perf_counter()
        tracemalloc.start()
        return self

    def __exit__(self, *exc):
        _, self.peak_bytes = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        self.seconds = time.perf_counter() - self.started
        self.rss_growth_bytes = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.rss_before) * 1024
        return False

    def assert_small(self):
        assert self.seconds < 2.0, self.seconds
        assert self.peak_bytes < 50 * 2**20, self.peak_bytes
        assert self.rss_growth_bytes < 200 * 2**20, self.rss_growth_bytes


@pytest.fixture
def evaluations(monkeypatch) -> list[list[str]]:
    """Ops the loader hands to onnx's reference evaluator (which would allocate their outputs); the
    evaluator is replaced by one that computes nothing, so a test can never allocate for real."""
    seen: list[list[str]] = []

    class NoEvaluation:
        def __init__(self, model, *args, **kwargs):
            seen.append([node.op_type for node in model.graph.node])

        def run(self, *args, **kwargs):
            raise RuntimeError("tests never evaluate what a hostile file asks for")

    monkeypatch.setattr(onnx.reference, "ReferenceEvaluator", NoEvaluation)
    return seen


HUGE = 10**6  # 10^6 x 10^6 = 10^12 elements


@pytest.mark.parametrize("where", ["initializer", "constant-node"])
def test_a_tensor_claiming_10_to_the_12_elements(where, small_model, save_onnx, load_untouched):
    claim = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[HUGE, HUGE])
    if where == "initializer":
        model = add_weight_model(small_model, claim)
    else:
        nodes = [
            helper.make_node("Constant", [], ["w"], value=claim),
            helper.make_node("Add", ["x", "w"], ["y"]),
        ]
        model = small_model(nodes)
    path = save_onnx(model)

    with _AllocationWatch() as watch:
        expect_refusal(load_untouched, path, ModelLoadError, "'w'", str([HUGE, HUGE]), "GiB")
    watch.assert_small()


def test_a_negative_dimension(small_model, save_onnx, load_untouched):
    path = save_onnx(
        add_weight_model(small_model, TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[-1, 4]))
    )

    expect_refusal(load_untouched, path, ModelLoadError, "'w'", "negative dimension")


@pytest.mark.parametrize("where", ["initializer", "constant-node"])
def test_raw_data_length_disagreeing_with_dims(where, small_model, save_onnx, load_untouched):
    weight = float_weight()
    weight.raw_data = weight.raw_data[:12]
    if where == "initializer":
        model = add_weight_model(small_model, weight)
    else:
        nodes = [
            helper.make_node("Constant", [], ["w"], value=weight),
            helper.make_node("Add", ["x", "w"], ["y"]),
        ]
        model = small_model(nodes)
    path = save_onnx(model)

    expect_refusal(load_untouched, path, ModelLoadError, "'w'", "(16 bytes) but stores 12 bytes", "damaged")


def _int64(name: str, values) -> TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def _f32(name: str, shape) -> TensorProto:
    return numpy_helper.from_array(np.ones(shape, dtype=np.float32), name)


# (nodes computing "big", initializers): every one would allocate ~10^10 .. 10^12 elements
GUARDED_EXPANSIONS = {
    "ConstantOfShape": (
        [helper.make_node("ConstantOfShape", ["shape"], ["big"])],
        [_int64("shape", [HUGE, HUGE])],
    ),
    "ConstantOfShape-from-Constant": (
        [
            helper.make_node("Constant", [], ["shape"], value=_int64("shape", [HUGE, HUGE])),
            helper.make_node("ConstantOfShape", ["shape"], ["big"]),
        ],
        [],
    ),
    "Expand": (
        [helper.make_node("Expand", ["one", "shape"], ["big"])],
        [_f32("one", [1, 1]), _int64("shape", [HUGE, HUGE])],
    ),
    "Tile": (
        [helper.make_node("Tile", ["one", "reps"], ["big"])],
        [_f32("one", [1, 1]), _int64("reps", [HUGE, HUGE])],
    ),
    "Range": (
        [helper.make_node("Range", ["start", "limit", "delta"], ["big"])],
        [_f32("start", []), numpy_helper.from_array(np.array(1e12, np.float32), "limit"), _f32("delta", [])],
    ),
}


@pytest.mark.parametrize("case", list(GUARDED_EXPANSIONS))
def test_a_computed_constant_asking_for_10_to_the_12_elements(
    case, small_model, save_onnx, load_untouched, evaluations
):
    nodes, initializers = GUARDED_EXPANSIONS[case]
    model = small_model([*nodes, helper.make_node("Add", ["x", "big"], ["y"], name="use")], initializers)
    path = save_onnx(model)

    with _AllocationWatch() as watch:
        expect_refusal(
            load_untouched, path, ModelLoadError, "would create a constant of", "elements", "hostile"
        )
    watch.assert_small()
    assert evaluations == []  # refused from the estimate, before any evaluation


N = 100_000  # two 400 KB weights whose broadcast is 10^10 elements (40 GB float32)

UNGUARDED_EXPANSIONS = {
    "Expand-both-ways": (
        [helper.make_node("Expand", ["col", "row_shape"], ["big"])],
        [_f32("col", [N, 1]), _int64("row_shape", [1, N])],
    ),
    "Mul-broadcast": (
        [helper.make_node("Mul", ["col", "row"], ["big"])],
        [_f32("col", [N, 1]), _f32("row", [1, N])],
    ),
    "Gemm-outer-product": (
        [helper.make_node("Gemm", ["col", "row"], ["big"])],
        [_f32("col", [N, 1]), _f32("row", [1, N])],
    ),
    "MatMul-batch-broadcast": (
        [helper.make_node("MatMul", ["a", "b"], ["big"])],
        [_f32("a", [1, N, 1]), _f32("b", [N, 1, 1])],
    ),
}


@pytest.mark.parametrize("case", list(UNGUARDED_EXPANSIONS))
def test_a_broadcast_constant_asking_for_10_to_the_10_elements(
    case, small_model, save_onnx, load_untouched, evaluations
):
    nodes, initializers = UNGUARDED_EXPANSIONS[case]
    model = small_model([*nodes, helper.make_node("Add", ["x", "big"], ["y"], name="use")], initializers)
    path = save_onnx(model)

    expect_refusal(load_untouched, path, ModelLoadError, "would create a constant of", "elements")
    assert evaluations == []


# ---------------------------------------------------------------------------------------------------
# Tensors whose stored values are damaged in ways other than raw_data's length


@pytest.mark.parametrize(
    "weight",
    [
        TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1, 4], float_data=[1.0, 2.0, 3.0]),
        TensorProto(name="w", data_type=TensorProto.INT64, dims=[1, 4], int64_data=[1, 2, 3, 4, 5]),
        TensorProto(name="w", data_type=TensorProto.UNDEFINED, dims=[1, 4], raw_data=b"\x00" * 4),
    ],
    ids=["float_data-too-short", "int64_data-too-long", "undefined-data-type"],
)
def test_typed_data_disagreeing_with_dims_or_type(weight, small_model, save_onnx, load_untouched):
    path = save_onnx(add_weight_model(small_model, weight))

    expect_refusal(load_untouched, path, ModelLoadError, "'w'")


def _folded_into_add(small_model, weight: TensorProto) -> onnx.ModelProto:
    """w is reshaped (a foldable node) before y = x + w."""
    nodes = [
        helper.make_node("Reshape", [weight.name, "shape"], ["w2"], name="reshape"),
        helper.make_node("Add", ["x", "w2"], ["y"], name="add"),
    ]
    return small_model(nodes, [weight, _int64("shape", [1, 4])])


@pytest.mark.parametrize(
    "weight",
    [
        TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1, 4], float_data=[1.0, 2.0, 3.0]),
        TensorProto(name="w", data_type=TensorProto.UNDEFINED, dims=[1, 4], raw_data=b"\x00" * 4),
    ],
    ids=["float_data-too-short", "undefined-data-type"],
)
def test_a_damaged_tensor_read_by_a_foldable_node(weight, small_model, save_onnx, load_untouched):
    path = save_onnx(_folded_into_add(small_model, weight))

    expect_refusal(load_untouched, path, ModelLoadError, "'w'")


@pytest.mark.parametrize("attribute", ["none", "empty-value", "misnamed-value"])
def test_a_constant_node_without_a_value(attribute, small_model, save_onnx, load_untouched):
    constant = helper.make_node("Constant", [], ["c"], name="c")
    if attribute == "empty-value":
        constant.attribute.append(helper.make_attribute("value", TensorProto()))
    elif attribute == "misnamed-value":  # one flipped byte in 'value', as a damaged download has
        constant.attribute.append(helper.make_attribute("vaLue", float_weight(name="c")))
    path = save_onnx(small_model([constant, helper.make_node("Add", ["x", "c"], ["y"])]))

    expect_refusal(load_untouched, path, ModelLoadError, "'c'")
