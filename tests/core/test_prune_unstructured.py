"""Unstructured and N:M pruning: exact targets, exact zeros, the right axis, the model still runs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from slimscope.core.layers import find_layers, tensor_array
from slimscope.core.prune.unstructured import prune_weights
from slimscope.core.recipe import PruneSpec


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture
def net() -> onnx.ModelProto:
    """conv (8x4x3x3) → relu → flatten → gemm (transB=1, 10x512) and a matmul (512x6, constant B)."""
    inits = {
        "cw": rand(8, 4, 3, 3, seed=1),
        "gw": rand(10, 512, seed=2),
        "mw": rand(512, 6, seed=3),
    }
    nodes = [
        helper.make_node("Conv", ["x", "cw"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "gw"], ["g"], name="fc", transB=1),
        helper.make_node("MatMul", ["f", "mw"], ["m"], name="mm"),
    ]
    graph = helper.make_graph(
        nodes,
        "net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("g", "m")],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def weights(model):
    return {t.name: np.array(tensor_array(t)) for t in model.graph.initializer}


def prune(model, specs):
    layers = find_layers(model, {})
    return prune_weights(model, layers, specs)


def test_layer_sparsity_is_exact_and_removes_the_smallest_magnitudes(net):
    before = weights(net)["cw"]
    result = prune(net, {"conv": PruneSpec(sparsity=0.5)})
    after = weights(result.model)["cw"]
    assert np.count_nonzero(after == 0) == before.size // 2
    assert result.sparsity["conv"] == 0.5
    assert np.abs(before[after == 0]).max() <= np.abs(before[after != 0]).min()
    np.testing.assert_array_equal(after[after != 0], before[after != 0])  # the rest untouched


def test_threshold_zeroes_exactly_what_is_below_it(net):
    before = weights(net)["gw"]
    result = prune(net, {"fc": PruneSpec(threshold=0.5)})
    after = weights(result.model)["gw"]
    np.testing.assert_array_equal(after == 0, np.abs(before) < 0.5)


def test_global_scope_reaches_the_target_across_layers_together(net):
    spec = PruneSpec(sparsity=0.8, scope="global")
    result = prune(net, {"fc": spec, "mm": spec})
    after = weights(result.model)
    total = after["gw"].size + after["mw"].size
    zeros = np.count_nonzero(after["gw"] == 0) + np.count_nonzero(after["mw"] == 0)
    assert zeros == round(0.8 * total)
    both = np.concatenate([np.abs(weights(net)["gw"]).ravel(), np.abs(weights(net)["mw"]).ravel()])
    kept = np.concatenate([after["gw"].ravel(), after["mw"].ravel()]) != 0
    assert both[~kept].max() <= both[kept].min()


@pytest.mark.parametrize(
    ("layer", "weight", "input_axis"), [("conv", "cw", 1), ("fc", "gw", 1), ("mm", "mw", 0)]
)
def test_two_of_four_along_the_input_dimension(net, layer, weight, input_axis):
    before = weights(net)[weight]
    result = prune(net, {layer: PruneSpec(structure="2:4")})
    after = weights(result.model)[weight]
    moved_after = np.moveaxis(after, input_axis, -1)
    moved_before = np.moveaxis(before, input_axis, -1)
    groups_after = moved_after.reshape(*moved_after.shape[:-1], -1, 4)
    groups_before = moved_before.reshape(*moved_before.shape[:-1], -1, 4)
    assert (np.count_nonzero(groups_after, axis=-1) == 2).all()
    kept = groups_after != 0
    smallest_kept = np.where(kept, np.abs(groups_before), np.inf).min(axis=-1)
    largest_dropped = np.where(kept, -np.inf, np.abs(groups_before)).max(axis=-1)
    assert (largest_dropped <= smallest_kept).all()
    assert result.sparsity[layer] == 0.5


def test_pruned_model_runs_and_source_is_untouched(net):
    original = net.SerializeToString()
    result = prune(net, {"conv": PruneSpec(sparsity=0.9), "fc": PruneSpec(structure="2:4")})
    assert net.SerializeToString() == original
    session = ort.InferenceSession(result.model.SerializeToString(), providers=["CPUExecutionProvider"])
    (g, m) = session.run(None, {"x": rand(1, 4, 8, 8, seed=9)})
    assert g.shape == (1, 10) and np.isfinite(g).all()


def test_a_shared_weight_is_pruned_once(net):
    net.graph.node.append(helper.make_node("Gemm", ["f", "gw"], ["g2"], name="fc_twin", transB=1))
    net.graph.output.append(helper.make_tensor_value_info("g2", TensorProto.FLOAT, None))
    result = prune(net, {"fc": PruneSpec(sparsity=0.5), "fc_twin": PruneSpec(sparsity=0.9)})
    assert np.count_nonzero(weights(result.model)["gw"] == 0) == weights(net)["gw"].size // 2
    assert any("shares its weight" in note for note in result.notes)
