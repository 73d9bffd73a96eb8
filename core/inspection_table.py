"""The human-readable form of an inspection: a summary and one table row per layer."""

from __future__ import annotations

from slimscope.core.errors import one_line
from slimscope.core.inspection import ModelReport
from slimscope.core.loading.input_shapes import guess_input_shapes, leaves_size_open

_NAME_WIDTH = 48


def format_report(report: ModelReport) -> str:
    loaded = report.loaded
    inputs = ", ".join(f"{k} {_dims(v)}" for k, v in loaded.input_shapes.items())
    lines = [
        f"{one_line(str(loaded.source))}  ({loaded.format}, opset {loaded.opset}, {human_bytes(loaded.file_size)} on disk)",
        f"inputs: {inputs or 'none'}",
    ]
    if report.shape_used and any(report.shape_used[k] != v for k, v in loaded.input_shapes.items()):
        lines.append(f"MACs for: {', '.join(f'{k} {_dims(v)}' for k, v in report.shape_used.items())}")
    if report.macs is None and leaves_size_open(loaded.input_shapes):
        guess = ",".join(_dims(shape) for shape in guess_input_shapes(loaded.input_shapes).values())
        lines.append(
            f"MACs need an input size: the model leaves it open; give one, e.g. --input-shape {guess}"
        )
    lines += [f"note: {one_line(note)}" for note in loaded.notes]
    lines.append("")
    rows = [("layer", "op", "weight shape", "params", "MACs", "sparsity", "range")]
    for layer in report.layers:
        stats = report.stats.get(layer.name)
        op = layer.op_type + (" dw" if layer.depthwise else "") + (" q" if layer.quantized else "")
        rows.append((
            _fit(one_line(layer.name)),  # a name from the file may hold line breaks or terminal escapes
            op,
            _dims(layer.weight_shape),
            human_count(layer.params),
            human_count(layer.macs) if layer.macs is not None else "?",
            f"{stats.sparsity:.1%}" if stats else "",
            f"[{stats.min:+.3g}, {stats.max:+.3g}]" if stats else "",
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {3, 4, 5}
    for index, row in enumerate(rows):
        cells = [
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    macs = human_count(report.macs) if report.macs is not None else "unknown (give --input-shape)"
    lines += [
        "",
        f"{len(report.layers)} layers; {human_count(report.params)} parameters "
        f"({human_bytes(report.weight_bytes)} of weights); {macs} MACs per inference.",
    ]
    return "\n".join(lines) + "\n"


def human_count(value: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.2f}{unit}"
    return str(value)


def human_bytes(value: int) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} B"


def _dims(shape) -> str:
    return "x".join(str(d) for d in shape) if shape else "scalar"


def _fit(name: str) -> str:
    return name if len(name) <= _NAME_WIDTH else "…" + name[-(_NAME_WIDTH - 1) :]


def short_layer_name(name: str, limit: int | None = None) -> str:
    """`name` without the path segments exporters repeat: PyTorch's exporter names a node after each module
    ("/blocks/blocks.3/…"), so a segment that the next one merely extends is dropped. With `limit`, what is
    still longer keeps its end (where the op and the module index are)."""
    parts = name.split("/")
    kept = [
        part for part, after in zip(parts, [*parts[1:], ""], strict=True) if not after.startswith(part + ".")
    ]
    short = "/".join(kept)
    return short if limit is None or len(short) <= limit else "…" + short[-(limit - 1) :]
