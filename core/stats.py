"""Per-layer weight statistics: summary numbers, a histogram, per-channel ranges and a sparsity map.

Everything is computed in a handful of passes over the weight, reusing partial results (global
min/max come from the per-channel ones, the zero count from the sparsity map), because inspecting a
ResNet-50-sized model should cost about as much as reading its weights once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HISTOGRAM_BINS = 128
MAX_MAP_SIDE = 256
_HISTOGRAM_CHUNK = 1 << 16


@dataclass(frozen=True)
class LayerStats:
    count: int
    zeros: int  # exact zeros
    min: float
    max: float
    mean: float
    std: float
    histogram_edges: np.ndarray  # HISTOGRAM_BINS + 1 edges over [min, max]
    histogram_counts: np.ndarray  # int64 counts, one per bin
    channel_min: np.ndarray  # per output channel
    channel_max: np.ndarray
    channel_l1: np.ndarray
    sparsity_map: np.ndarray  # fraction of zeros per (output channel × input block), ≤ 256×256
    map_rows: np.ndarray  # first output channel of each map row
    map_cols: np.ndarray  # first input block of each map column

    @property
    def sparsity(self) -> float:
        return self.zeros / self.count if self.count else 0.0


def compute_layer_stats(values: np.ndarray, blocks: np.ndarray) -> LayerStats:
    """`values`: the weight in any layout; `blocks`: the same numbers as [out, in blocks, per block]."""
    with np.errstate(invalid="ignore", over="ignore"):  # a damaged weight (inf, NaN) is still shown
        return _compute(values, blocks)


def _compute(values: np.ndarray, blocks: np.ndarray) -> LayerStats:
    flat = values.reshape(-1)
    rows = blocks.reshape(blocks.shape[0], -1)
    channel_min = rows.min(axis=1)
    channel_max = rows.max(axis=1)
    channel_l1 = np.abs(rows).sum(axis=1, dtype=np.float64)
    row_sums = rows.sum(axis=1, dtype=np.float64)
    row_squares = np.einsum("ij,ij->i", rows, rows, dtype=np.float64)
    count = flat.size
    mean = float(row_sums.sum() / count)
    variance = max(float(row_squares.sum() / count) - mean * mean, 0.0)
    zeros = int(np.count_nonzero(flat == 0))
    # Dense weights (the common case) skip the per-block zero count.
    zero_cells = _zeros_per_block(blocks) if zeros else np.zeros(blocks.shape[:2], dtype=np.int32)
    lo, hi = float(channel_min.min()), float(channel_max.max())
    counts, edges = _histogram(flat, lo, hi)
    sparsity_map, map_rows, map_cols = _downsample_zeros(zero_cells, blocks.shape[2])
    return LayerStats(
        count=count,
        zeros=zeros,
        min=lo,
        max=hi,
        mean=mean,
        std=float(np.sqrt(variance)),
        histogram_edges=edges,
        histogram_counts=counts.astype(np.int64),
        channel_min=channel_min.astype(np.float32),
        channel_max=channel_max.astype(np.float32),
        channel_l1=channel_l1.astype(np.float32),
        sparsity_map=sparsity_map,
        map_rows=map_rows,
        map_cols=map_cols,
    )


def _zeros_per_block(blocks: np.ndarray) -> np.ndarray:
    # Blocks are short (a 3x3 kernel, or one element): adding K strided slices is ~6x faster than
    # count_nonzero along the last axis, which iterates element by element over tiny rows.
    is_zero = (blocks == 0).view(np.uint8)
    counts = is_zero[:, :, 0].astype(np.int32)
    for k in range(1, blocks.shape[2]):
        counts += is_zero[:, :, k]
    return counts


def _histogram(flat: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    if not (np.isfinite(lo) and np.isfinite(hi)):  # a damaged weight: histogram what is finite
        flat = flat[np.isfinite(flat)]
        if flat.size == 0:
            return np.zeros(HISTOGRAM_BINS, np.int64), np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
        lo, hi = float(flat.min()), float(flat.max())
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    # np.histogram corrects every index against float64 edges and runs ~3x slower; here the bin index
    # is computed once in the weight's precision, so a value within rounding of an edge may land in
    # the neighbouring bin — invisible in a 128-bin plot, and the counts still sum to the total.
    # Chunks keep the temporaries in cache (bincount needs machine-word indices: 8 bytes each).
    counts = np.zeros(HISTOGRAM_BINS + 1, np.int64)
    # float64 when the range is too narrow for a float32 scale (denormal or near-constant weights)
    precision = np.float32 if np.isfinite(np.float32(HISTOGRAM_BINS / (hi - lo))) else np.float64
    chunk = min(flat.size, _HISTOGRAM_CHUNK)
    scaled, index = np.empty(chunk, precision), np.empty(chunk, np.intp)
    offset, scale = precision(lo), precision(HISTOGRAM_BINS / (hi - lo))
    for start in range(0, flat.size, chunk):
        part = flat[start : start + chunk]
        out, idx = scaled[: part.size], index[: part.size]
        np.subtract(part, offset, out=out, dtype=precision)
        np.multiply(out, scale, out=out)
        np.clip(out, 0, HISTOGRAM_BINS, out=out)
        idx[...] = out
        counts += np.bincount(idx, minlength=HISTOGRAM_BINS + 1)
    counts[HISTOGRAM_BINS - 1] += counts[HISTOGRAM_BINS]  # the maximum itself belongs to the last bin
    return counts[:HISTOGRAM_BINS], np.linspace(lo, hi, HISTOGRAM_BINS + 1)


def _downsample_zeros(zero_cells: np.ndarray, per_block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fractions of zeros on a grid of at most MAX_MAP_SIDE² cells, each an exact fraction of its block."""
    rows = _cell_starts(zero_cells.shape[0])
    cols = _cell_starts(zero_cells.shape[1])
    if not zero_cells.any():
        return np.zeros((rows.size, cols.size), np.float32), rows, cols
    # Columns first: reducing the contiguous axis first is ~5x faster than the other order.
    summed = np.add.reduceat(np.add.reduceat(zero_cells, cols, axis=1), rows, axis=0)
    row_sizes = np.diff(np.append(rows, zero_cells.shape[0]))
    col_sizes = np.diff(np.append(cols, zero_cells.shape[1]))
    elements = np.outer(row_sizes, col_sizes) * per_block
    return (summed / elements).astype(np.float32), rows, cols


def _cell_starts(length: int) -> np.ndarray:
    if length <= MAX_MAP_SIDE:
        return np.arange(length)
    return np.linspace(0, length, MAX_MAP_SIDE, endpoint=False).astype(np.int64)
