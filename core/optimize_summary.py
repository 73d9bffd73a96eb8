"""The human-readable summary of an optimization or evaluation report (the CLI's default output)."""

from __future__ import annotations

from slimscope.core.errors import one_line
from slimscope.core.evaluate.quality_warnings import decibels_text, percent_text
from slimscope.core.inspection_table import human_bytes, human_count


def format_summary(report: dict) -> str:
    lines = []
    if "output" in report:
        lines.append(f"wrote {report['output']}")
    for warning in report.get("warnings", []):
        lines.append(f"WARNING: {warning}")
    lines.append("")
    rows = [("", "original", "optimized", "change")]
    accuracy = report.get("accuracy")
    if accuracy:
        rows.append(
            _row("top-1 accuracy", accuracy["original"], accuracy["optimized"], _percent, points=True)
        )
    latency = report.get("latency_ms")
    if latency:
        before, after = latency["original"], latency["optimized"]
        speed = f"{before / after:.2f}x faster" if after <= before else f"{after / before:.2f}x SLOWER"
        rows.append((f"latency ({latency['threads']} thread)", f"{before:.2f} ms", f"{after:.2f} ms", speed))
    for key, label, show in (("size_bytes", "size on disk", human_bytes), ("gzip_bytes", "gzip size", human_bytes),
                             ("nonzero_params", "non-zero weights", human_count), ("macs", "MACs", human_count)):  # fmt: skip
        if report.get(key) and None not in report[key].values():
            rows.append(_row(label, report[key]["original"], report[key]["optimized"], show))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
              for r in rows]  # fmt: skip
    if report.get("agreement") is not None:
        lines.append(f"top-1 agreement: {percent_text(report['agreement'])}")
    sqnr = report.get("sqnr_db")
    if sqnr is not None:  # "inf"/"-inf" in the JSON-ready report
        value = float(sqnr) if isinstance(sqnr, str) else sqnr
        lines.append(f"SQNR on {report.get('sqnr_on', 'the outputs')}: {decibels_text(value)}")
    if report.get("cosine") is not None:
        lines.append(f"cosine: {round(report['cosine'], 4)}")
    hurt = sorted((layer for layer in report.get("layers", []) if isinstance(layer.get("sqnr_db"), float)),
                  key=lambda layer: layer["sqnr_db"])[:3]  # fmt: skip
    if hurt:
        lines.append(
            "lowest per-layer SQNR: " + ", ".join(f"{h['name']} {h['sqnr_db']:.1f} dB" for h in hurt)
        )
    lines += [f"note: {note}" for note in report.get("notes", [])]
    # Paths and layer names may hold line breaks or terminal escapes: shown escaped, one line each.
    return "\n".join(one_line(line) for line in lines) + "\n"


def _row(label: str, before, after, show, points: bool = False) -> tuple[str, str, str, str]:
    if points:
        change = f"{(after - before) * 100:+.2f} points"
    elif before:
        change = f"{after / before:.2f}x"
    else:
        change = ""
    return label, show(before), show(after), change


def _percent(value: float) -> str:
    return f"{value:.2%}"
