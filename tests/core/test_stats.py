"""Weight statistics checked against numpy on tensors whose answers are known."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from slimscope.core.layers import find_layers, weight_blocks
from slimscope.core.shapes import infer_shapes
from slimscope.core.stats import HISTOGRAM_BINS, MAX_MAP_SIDE, compute_layer_stats


def conv_blocks(values: np.ndarray) -> np.ndarray:
    """A Conv weight [out, in, kh, kw] as [out, in, kh·kw] (what `weight_blocks` makes of it)."""
    return values.reshape(values.shape[0], values.shape[1], -1)


def gemm_blocks(values: np.ndarray) -> np.ndarray:
    """A Gemm transB=1 weight [out, in] as [out, in, 1]."""
    return values.reshape(values.shape[0], values.shape[1], 1)


@pytest.fixture
def weight() -> np.ndarray:
    rng = np.random.default_rng(42)
    values = rng.standard_normal((6, 5, 3, 3)).astype(np.float32) * 0.2 + 0.05
    values[rng.random(values.shape) < 0.3] = 0.0
    values[4] = 0.0  # one pruned output channel
    return values


def layer_for(op: str, weight: np.ndarray, **attrs):
    """The `Layer` find_layers makes of a one-node model around `weight` (for its block layout)."""
    x_shape = {
        "Gemm": [2, weight.shape[1 - attrs.get("transB", 0)]],
        "ConvTranspose": [1, weight.shape[0], 3, 3],
    }
    node = helper.make_node(op, ["x", "W"], ["y"], name="layer", **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape[op])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    [layer] = find_layers(model, infer_shapes(model, {}))
    return layer


# ---------------------------------------------------------------- summary numbers and histogram


def test_summary_numbers_match_numpy(weight):
    stats = compute_layer_stats(weight, conv_blocks(weight))
    as64 = weight.astype(np.float64)
    assert stats.count == weight.size
    assert stats.zeros == np.count_nonzero(weight == 0)
    assert stats.zeros >= 5 * 9  # the fixture really has zeros
    assert stats.sparsity == pytest.approx(stats.zeros / weight.size, rel=1e-12)
    assert stats.min == float(weight.min()) and stats.max == float(weight.max())
    np.testing.assert_allclose(stats.mean, as64.mean(), rtol=1e-6)
    np.testing.assert_allclose(stats.std, np.std(as64), rtol=1e-6)


def test_histogram_matches_numpy(weight):
    stats = compute_layer_stats(weight, conv_blocks(weight))
    counts, edges = np.histogram(weight, bins=HISTOGRAM_BINS, range=(stats.min, stats.max))
    assert HISTOGRAM_BINS == 128
    assert stats.histogram_counts.shape == (128,) and stats.histogram_edges.shape == (129,)
    assert stats.histogram_counts.sum() == weight.size
    np.testing.assert_array_equal(stats.histogram_counts, counts)
    np.testing.assert_allclose(stats.histogram_edges, edges, rtol=1e-6)
    assert stats.histogram_edges[0] == stats.min and stats.histogram_edges[-1] == stats.max


def random_weight(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = (rng.standard_normal((64, 64, 3, 3)) * rng.uniform(0.01, 3) + rng.uniform(-1, 1)).astype(
        np.float32
    )
    values[rng.random(values.shape) < 0.3] = 0.0
    return values


@pytest.mark.parametrize("seed", range(40))
def test_histogram_differs_from_numpy_only_at_bin_edges(seed):
    """The histogram bins in float32 (documented in stats.py): a value within rounding of a bin edge may
    land in the neighbouring bin, nothing else may move."""
    values = random_weight(seed)
    stats = compute_layer_stats(values, conv_blocks(values))
    counts, _ = np.histogram(values, bins=HISTOGRAM_BINS, range=(stats.min, stats.max))
    assert stats.histogram_counts.dtype == np.int64
    assert stats.histogram_counts.sum() == values.size
    position = (values.astype(np.float64) - stats.min) / (stats.max - stats.min) * HISTOGRAM_BINS
    near_an_edge = np.count_nonzero(np.abs(position - np.round(position)) < 1e-4)
    assert np.abs(stats.histogram_counts - counts).sum() <= 2 * near_an_edge


def test_std_with_an_offset_mean():
    values = (np.random.default_rng(1).standard_normal((64, 32, 3, 3)) * 0.1 + 3.0).astype(np.float32)
    stats = compute_layer_stats(values, conv_blocks(values))
    np.testing.assert_allclose(stats.std, np.std(values.astype(np.float64)), rtol=1e-6)
    np.testing.assert_allclose(stats.mean, values.astype(np.float64).mean(), rtol=1e-6)


# ---------------------------------------------------------------- per output channel


def test_channel_min_max_l1(weight):
    stats = compute_layer_stats(weight, conv_blocks(weight))
    rows = weight.reshape(6, -1)
    np.testing.assert_array_equal(stats.channel_min, rows.min(axis=1))
    np.testing.assert_array_equal(stats.channel_max, rows.max(axis=1))
    np.testing.assert_allclose(stats.channel_l1, np.abs(rows.astype(np.float64)).sum(axis=1), rtol=1e-6)
    assert stats.channel_l1[4] == 0.0 and stats.channel_min[4] == 0.0 == stats.channel_max[4]


def test_channels_follow_the_output_axis_of_gemm_without_transpose():
    values = np.random.default_rng(2).standard_normal((8, 3)).astype(np.float32)  # [in, out] (transB=0)
    layer = layer_for("Gemm", values, transB=0)
    assert layer.out_channels == 3
    stats = compute_layer_stats(values, weight_blocks(values, layer))
    np.testing.assert_array_equal(stats.channel_min, values.min(axis=0))
    np.testing.assert_array_equal(stats.channel_max, values.max(axis=0))
    np.testing.assert_allclose(stats.channel_l1, np.abs(values).sum(axis=0), rtol=1e-6)
    assert stats.sparsity_map.shape == (3, 8)


def test_channels_follow_the_output_axis_of_grouped_conv_transpose():
    values = np.random.default_rng(3).standard_normal((4, 3, 2, 2)).astype(np.float32)  # [Cin, Cout/g, k, k]
    layer = layer_for("ConvTranspose", values, group=2)
    stats = compute_layer_stats(values, weight_blocks(values, layer))
    assert stats.channel_min.shape == (6,)
    for out in range(6):
        group, local = divmod(out, 3)
        feeding = values[group * 2 : group * 2 + 2, local]  # the inputs of its group, its kernel column
        assert stats.channel_min[out] == feeding.min()
        assert stats.channel_max[out] == feeding.max()
        np.testing.assert_allclose(stats.channel_l1[out], np.abs(feeding).sum(), rtol=1e-6)


# ---------------------------------------------------------------- sparsity map


def test_sparsity_map_exact_fractions_on_a_small_conv():
    values = np.ones((4, 3, 3, 3), np.float32)
    values[0] = 0.0  # output channel 0 pruned: a row of 1.0
    values[1, 2] = 0.0  # one whole kernel: cell (1, 2) is 1.0
    values[2, 1, 1, 1] = 0.0  # one weight of a 3×3 kernel: cell (2, 1) is 1/9
    stats = compute_layer_stats(values, conv_blocks(values))
    expected = np.zeros((4, 3), np.float32)
    expected[0] = 1.0
    expected[1, 2] = 1.0
    expected[2, 1] = np.float32(1 / 9)
    np.testing.assert_array_equal(stats.sparsity_map, expected)
    np.testing.assert_array_equal(stats.map_rows, [0, 1, 2, 3])
    np.testing.assert_array_equal(stats.map_cols, [0, 1, 2])
    assert stats.zeros == 27 + 9 + 1
    assert stats.sparsity == pytest.approx(37 / 108)


def block_fractions(zero: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Zero fraction of each (row range × column range) block, from a summed-area table."""
    table = np.zeros((zero.shape[0] + 1, zero.shape[1] + 1), np.int64)
    table[1:, 1:] = zero.astype(np.int64).cumsum(0).cumsum(1)
    r = np.append(rows, zero.shape[0])
    c = np.append(cols, zero.shape[1])
    sums = (
        table[r[1:]][:, c[1:]] - table[r[:-1]][:, c[1:]] - table[r[1:]][:, c[:-1]] + table[r[:-1]][:, c[:-1]]
    )
    return sums / np.outer(np.diff(r), np.diff(c))


def test_sparsity_map_of_a_large_layer_is_downsampled_exactly():
    out_features, in_features = 1000, 600
    r, c = np.meshgrid(np.arange(out_features), np.arange(in_features), indexing="ij")
    zero = (r % 7 == 0) | (c % 5 == 0) | ((r + 2 * c) % 11 == 0)
    zero[:, :50] = True  # a fully pruned band of inputs
    values = np.where(zero, 0.0, 1.0 + (r + c) % 3).astype(np.float32)  # [out, in] like Gemm transB=1
    stats = compute_layer_stats(values, gemm_blocks(values))

    assert stats.sparsity_map.shape == (MAX_MAP_SIDE, MAX_MAP_SIDE) == (256, 256)
    assert stats.sparsity_map.dtype == np.float32
    # Cell starts spread the rows and columns evenly: start i is floor(i·length/256).
    np.testing.assert_array_equal(stats.map_rows[:5], [0, 3, 7, 11, 15])
    np.testing.assert_array_equal(stats.map_cols[:5], [0, 2, 4, 7, 9])
    np.testing.assert_array_equal(stats.map_rows, (np.arange(256) * 1000) // 256)
    np.testing.assert_array_equal(stats.map_cols, (np.arange(256) * 600) // 256)

    # A couple of cells by hand: cell (0, 0) covers rows 0-2 × columns 0-1, all in the pruned band.
    assert stats.sparsity_map[0, 0] == 1.0
    # Cell (1, 30): rows 3-6, columns 70-72 (starts 70, 72 → 70, 71).
    assert stats.map_rows[1] == 3 and stats.map_rows[2] == 7
    assert stats.map_cols[30] == 70 and stats.map_cols[31] == 72
    assert stats.sparsity_map[1, 30] == np.float32(zero[3:7, 70:72].mean())

    expected = block_fractions(zero, stats.map_rows, stats.map_cols)
    np.testing.assert_allclose(stats.sparsity_map, expected, rtol=1e-6, atol=0)

    row_sizes = np.diff(np.append(stats.map_rows, out_features))
    col_sizes = np.diff(np.append(stats.map_cols, in_features))
    weighted = (stats.sparsity_map.astype(np.float64) * np.outer(row_sizes, col_sizes)).sum() / values.size
    assert stats.zeros == np.count_nonzero(zero)
    assert weighted == pytest.approx(stats.sparsity, rel=1e-6)


def test_sparsity_map_cells_divide_by_all_elements_of_their_blocks():
    values = np.ones((300, 2, 3, 3), np.float32)  # 300 output channels: rows are downsampled
    values[:4, 0, 0, :] = 0.0  # 3 of 9 zeros in the input-0 kernels of output channels 0-3
    values[5:7, 1] = 0.0  # output channels 5 and 6 no longer read input 1
    stats = compute_layer_stats(values, conv_blocks(values))
    assert stats.sparsity_map.shape == (256, 2)
    np.testing.assert_array_equal(stats.map_rows[:8], [0, 1, 2, 3, 4, 5, 7, 8])  # floor(i·300/256)
    np.testing.assert_array_equal(stats.sparsity_map[:4, 0], np.float32(3 / 9))
    assert stats.sparsity_map[4, 0] == 0.0
    assert stats.sparsity_map[5, 1] == 1.0  # cell 5 is channels 5-6: both kernels of input 1 are zero
    assert stats.sparsity_map[6, 1] == 0.0
    assert stats.zeros == 12 + 18


# ---------------------------------------------------------------- unusual values


def test_constant_tensor():
    values = np.full((3, 4), 0.5, np.float32)
    stats = compute_layer_stats(values, gemm_blocks(values))
    assert stats.min == stats.max == 0.5
    assert stats.mean == 0.5
    assert stats.std == pytest.approx(0.0, abs=1e-7)
    assert np.all(np.isfinite(stats.histogram_edges))
    assert stats.histogram_edges[0] <= 0.5 <= stats.histogram_edges[-1]
    assert stats.histogram_counts.sum() == 12 and np.count_nonzero(stats.histogram_counts) == 1
    assert stats.zeros == 0 and not stats.sparsity_map.any()


def test_all_zero_tensor():
    values = np.zeros((2, 3, 3, 3), np.float32)
    stats = compute_layer_stats(values, conv_blocks(values))
    assert stats.sparsity == 1.0 and stats.zeros == 54
    assert np.all(stats.sparsity_map == 1.0)
    assert stats.histogram_counts.sum() == 54
    assert (stats.min, stats.max, stats.mean, stats.std) == (0.0, 0.0, 0.0, 0.0)


def test_float64_weights():
    values = np.random.default_rng(4).standard_normal((5, 7))
    stats = compute_layer_stats(values, gemm_blocks(values))
    np.testing.assert_allclose(stats.std, np.std(values), rtol=1e-9)
    assert stats.histogram_counts.sum() == 35


@pytest.mark.parametrize(
    "damage",
    [
        {(0, 1): np.nan},
        {(0, 1): np.inf},
        {(1, 2): -np.inf, (2, 0): np.nan},
        {(0, 0): np.inf, (1, 1): -np.inf},
    ],
    ids=["nan", "inf", "-inf and nan", "inf and -inf"],
)
def test_nan_and_inf_weights_do_not_crash(damage):
    values = np.arange(12, dtype=np.float32).reshape(3, 4) - 5.0  # contains one exact zero, at (1, 1)
    for index, value in damage.items():
        values[index] = value
    with warnings.catch_warnings():
        # inf − inf in the sums warns; the values are damaged and the numbers say so (nan/inf).
        warnings.simplefilter("ignore", RuntimeWarning)
        stats = compute_layer_stats(values, gemm_blocks(values))
    finite = values[np.isfinite(values)]
    assert stats.count == 12
    assert stats.zeros == np.count_nonzero(values == 0)
    assert stats.histogram_counts.sum() == finite.size  # what is finite is still shown
    assert np.all(np.isfinite(stats.histogram_edges))
    assert stats.histogram_edges[0] == finite.min() and stats.histogram_edges[-1] == finite.max()
    assert stats.sparsity_map.shape == (3, 4)
    assert stats.sparsity_map[1, 1] == (1.0 if values[1, 1] == 0 else 0.0)


@pytest.mark.parametrize("values", [[0.0, 1e-40], [1e-30, 1.0000001e-30]], ids=["denormal", "tiny-range"])
def test_weight_with_a_tiny_value_range(values):
    array = np.array([values], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        stats = compute_layer_stats(array, gemm_blocks(array))
    assert stats.histogram_counts.sum() == 2
    assert stats.histogram_counts[0] == 1 and stats.histogram_counts[-1] == 1


def test_weight_with_a_huge_value_range():
    array = np.array([[-3e38, 0.0, 3e38]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # max - min overflows float32
        stats = compute_layer_stats(array, gemm_blocks(array))
    assert stats.histogram_counts.sum() == 3
    assert stats.histogram_counts[0] == 1 and stats.histogram_counts[-1] == 1
    assert (stats.min, stats.max) == (float(np.float32(-3e38)), float(np.float32(3e38)))


def test_all_nan_weight_does_not_crash():
    values = np.full((2, 2), np.nan, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        stats = compute_layer_stats(values, gemm_blocks(values))
    assert stats.count == 4 and stats.zeros == 0
    assert stats.histogram_counts.shape == (128,) and stats.histogram_counts.sum() == 0


def test_single_row_vector_weight():
    """A MatMul with a 1-D constant operand: one output channel, one map row."""
    values = np.array([0.0, 1.0, 0.0, -2.0], np.float32)
    stats = compute_layer_stats(values, values.reshape(1, -1, 1))
    np.testing.assert_array_equal(stats.sparsity_map, [[1.0, 0.0, 1.0, 0.0]])
    assert stats.channel_l1.tolist() == [3.0]
