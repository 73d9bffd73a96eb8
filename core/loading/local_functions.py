"""Model-local functions (FunctionProto) are inlined when a model is opened.

A layer inside a local function is invisible to everything that walks `graph.node` (the layer view,
pruning, the quantizer's settings), while onnxruntime's pre-processing inlines it on its own: the
quantizer was then handed node names nobody had seen ("unexpected KeyError"). Inlining first makes the
graph Slimscope shows the graph that runs; the graph checks then see the functions' bodies too.
"""

from __future__ import annotations

import onnx
import onnx.inliner

from slimscope.core.errors import ModelLoadError


def inline_local_functions(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """The model with every call of a local function replaced by its body; how many functions it had."""
    count = len(model.functions)
    if not count:
        return model, 0
    _refuse_recursion(model)
    try:
        inlined = onnx.inliner.inline_local_functions(model)
    except Exception as exc:  # onnx's C++ inliner on a malformed body: one sentence, not its text
        raise ModelLoadError(
            "The model's local functions cannot be expanded into its graph: the file is damaged."
        ) from exc
    return inlined, count


def _refuse_recursion(model: onnx.ModelProto) -> None:
    """A function that calls itself, directly or through others, would never finish expanding."""
    calls = {(f.domain, f.name): {(n.domain, n.op_type) for n in f.node} for f in model.functions}
    for start in calls:
        stack, seen = [start], set()
        while stack:
            current = stack.pop()
            for callee in calls.get(current, ()):
                if callee == start:
                    raise ModelLoadError(
                        f"The model's local function '{start[1]}' calls itself (directly or through "
                        "other functions), so it can never be expanded: the file is damaged."
                    )
                if callee in calls and callee not in seen:
                    seen.add(callee)
                    stack.append(callee)
