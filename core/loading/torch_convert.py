"""Child process: load a trusted TorchScript or torch.export file and convert it to ONNX.

Run as `python -m slimscope.core.loading.torch_convert KIND SOURCE OUT_DIR [SHAPES]`. It is a separate
process because loading these files runs code from them and the conversion can crash or hang; the
parent only ever sees a JSON answer on the last line of stdout.
"""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from pathlib import Path

OPSET = 17


class _ShapeMissing(Exception):
    pass


class _Unreadable(Exception):
    """The file is not one the installed PyTorch can open: the message is the whole answer."""


def die_with_parent() -> None:
    """End when the process that started this one ends. That is a worker process, which its own parent
    kills outright at its time limit; nothing would then end this conversion, orphaned and still busy
    (Linux: the kernel sends SIGKILL on the parent's death; elsewhere the parent's own cleanup must do)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import os
    import signal

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    parent = os.environ.get("SLIMSCOPE_PARENT_PID", "")
    if parent.isdigit() and os.getppid() != int(parent):  # it died before the line above
        os._exit(1)


def main(argv: list[str]) -> int:
    die_with_parent()
    kind, source, out_dir = argv[0], Path(argv[1]), Path(argv[2])
    shapes = [tuple(int(d) for d in s.split("x")) for s in argv[3].split(",")] if len(argv) > 3 else None
    try:
        import torch

        torch.set_num_threads(1)
        warnings.simplefilter("ignore")
        out = out_dir / "model.onnx"
        if kind == "torchscript":
            used = _convert_torchscript(torch, source, out, shapes)
        else:
            used = _convert_exported_program(torch, source, out, shapes)
    except _ShapeMissing as exc:
        return _answer({"error": str(exc), "error_type": "InputShapeError"}, 1)
    except _Unreadable as exc:
        return _answer({"error": str(exc)}, 1)
    except Exception as exc:  # anything the file or the exporter throws: reported, never a crash
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        return _answer({"error": f"Converting '{source.name}' to ONNX failed: {detail}"}, 1)
    return _answer({"onnx": str(out), "input_shapes": [list(s) for s in used]}, 0)


def _convert_torchscript(torch, source: Path, out: Path, shapes) -> list[tuple[int, ...]]:
    module = torch.jit.load(str(source), map_location="cpu").eval()
    # A TorchScript file keeps no usable input shape: traced_inputs.pkl exists, but torch.jit.load does
    # not restore it (measured with torch 2.13), so the user gives one.
    if shapes is None:
        raise _ShapeMissing(
            f"'{source.name}' does not record its input shape; give one, e.g. --input-shape 1x3x224x224."
        )
    args = tuple(torch.zeros(s) for s in shapes)
    _check_runs(torch, module, args, source)
    # The TorchScript-based exporter is the one that accepts ScriptModules; the dynamo exporter
    # needs a Python nn.Module or an ExportedProgram.
    torch.onnx.export(
        module,
        args,
        str(out),
        dynamo=False,
        opset_version=OPSET,
        input_names=[f"input_{i}" if len(args) > 1 else "input" for i in range(len(args))],
    )
    return shapes


def _check_runs(torch, module, args: tuple, source: Path) -> None:
    """Run the model once so that a wrong input shape is reported as such, not as an exporter error."""
    try:
        with torch.no_grad():
            module(*args)
    except Exception as exc:
        shapes = ", ".join("x".join(str(d) for d in a.shape) for a in args)
        first = str(exc).strip().splitlines()
        detail = next((line.strip() for line in reversed(first) if line.strip()), type(exc).__name__)
        raise _ShapeMissing(
            f"'{source.name}' does not run on an input of shape {shapes}: {detail[:200]}"
        ) from exc


def _convert_exported_program(torch, source: Path, out: Path, shapes) -> list[tuple[int, ...]]:
    try:
        program = torch.export.load(str(source))
    except Exception as exc:
        # torch logs the real cause through `logging` (silenced here) and raises "check the warnings
        # above", which the user never sees: say what can be said about the file instead.
        raise _Unreadable(
            f"'{source.name}' cannot be read as a torch.export program (.pt2): it is damaged, or was "
            f"saved by a PyTorch version that this one ({torch.__version__.split('+')[0]}) cannot read."
        ) from exc
    if shapes is not None:
        args = tuple(torch.zeros(s) for s in shapes)
    else:
        example = getattr(program, "example_inputs", None)
        args = tuple(example[0]) if example else _placeholder_examples(torch, program, source)
    onnx_program = torch.onnx.export(program, args, dynamo=True, opset_version=OPSET, verbose=False)
    onnx_program.save(str(out), external_data=True)
    return [tuple(a.shape) for a in args]


def _placeholder_examples(torch, program, source: Path) -> tuple:
    user_inputs = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    nodes = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    args = []
    for name in user_inputs:
        value = nodes[name].meta.get("val")
        if value is None or not all(isinstance(d, int) for d in value.shape):
            raise _ShapeMissing(
                f"'{source.name}' has a dynamic input shape; give one, e.g. --input-shape 1x3x224x224."
            )
        args.append(torch.zeros(tuple(value.shape), dtype=value.dtype))
    return tuple(args)


def _answer(answer: dict, code: int) -> int:
    sys.stdout.write("\n" + json.dumps(answer) + "\n")
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
