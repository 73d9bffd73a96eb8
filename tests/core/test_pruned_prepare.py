"""A pruning edit reuses the unpruned model's prepared form (zeros carried over) and gets exactly what
preparing the pruned model afresh gives; anything beyond added zeros falls back to preparing."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from slimscope.core.layers import find_layers
from slimscope.core.prune.unstructured import prune_weights
from slimscope.core.quantize import CalibrationCache, iter_quantize
from slimscope.core.quantize.prepare import prepare_model
from slimscope.core.quantize.pruned_prepare import prepare_from_base
from slimscope.core.recipe import PruneSpec
from slimscope.core.tasks import run_sync


def conv_bn_gemm() -> onnx.ModelProto:
    """Conv + BatchNormalization (folded by pre-processing) and MatMul + Add (fused into a Gemm)."""
    rng = np.random.default_rng(7)
    values = {
        "w": rng.standard_normal((8, 3, 3, 3)), "gamma": rng.uniform(0.5, 2, 8), "beta": rng.standard_normal(8),
        "mean": rng.standard_normal(8), "var": rng.uniform(0.5, 2, 8), "mw": rng.standard_normal((512, 5)) * 0.1,
        "mb": rng.standard_normal(5),
    }  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["bn"], name="bn"),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("MatMul", ["f", "mw"], ["mm"], name="matmul"),
        helper.make_node("Add", ["mm", "mb"], ["y"], name="add"),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in values.items()],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def pruned(model, sparsity):
    layers = find_layers(model, {})
    specs = {layer.name: PruneSpec(sparsity=sparsity) for layer in layers}
    return prune_weights(model, layers, specs).model


def weights(model):
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def test_derived_prepared_model_equals_preparing_the_pruned_model_afresh():
    base = conv_bn_gemm()
    shapes = {"x": (4, 3, 8, 8)}
    base_prepared = prepare_model(base, find_layers(base, {}), shapes)
    for sparsity in (0.3, 0.7):
        model = pruned(base, sparsity)
        derived = prepare_from_base(base, base_prepared, model, find_layers(model, {}))
        fresh = prepare_model(model, find_layers(model, {}), shapes)
        assert derived is not None
        got, want = weights(derived.model), weights(fresh.model)
        assert got.keys() == want.keys()
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7)
        conv_weight = got[find_layers(derived.model, {})[0].weight]
        assert 0.25 < np.mean(conv_weight == 0) < 0.75  # the zeros were carried over


def test_changes_beyond_added_zeros_are_refused():
    base = conv_bn_gemm()
    base_prepared = prepare_model(base, find_layers(base, {}), {"x": (4, 3, 8, 8)})
    model = onnx.ModelProto()
    model.CopyFrom(base)
    tensor = next(t for t in model.graph.initializer if t.name == "w")
    tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * 2, "w"))  # rescaled, not pruned
    assert prepare_from_base(base, base_prepared, model, find_layers(model, {})) is None
    other_graph = onnx.ModelProto()
    other_graph.CopyFrom(pruned(base, 0.5))
    other_graph.graph.node[2].op_type = "Sigmoid"
    assert prepare_from_base(base, base_prepared, other_graph, find_layers(other_graph, {})) is None


def test_quantizing_pruned_copies_prepares_the_base_once_and_matches_a_cold_run(monkeypatch):
    import slimscope.core.quantize.runner as runner

    calls = []
    real = runner.prepare_model
    monkeypatch.setattr(runner, "prepare_model", lambda *a, **k: calls.append(1) or real(*a, **k))
    base = conv_bn_gemm()
    x = np.random.default_rng(3).standard_normal((8, 3, 8, 8)).astype(np.float32)
    cache = CalibrationCache()
    for sparsity in (0.5, 0.3, 0.6):
        warm = run_sync(iter_quantize(pruned(base, sparsity), {}, x, cache=cache, pruned_from=base))
    assert len(calls) == 1  # the base, once; every pruned copy derived from it
    cold = run_sync(iter_quantize(pruned(base, 0.6), {}, x, cache=CalibrationCache()))
    assert warm.model.SerializeToString() == cold.model.SerializeToString()
