"""TorchScript and torch.export files: opened only on the user's trust, converted in a child process."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from slimscope.core.errors import UntrustedModelError
from slimscope.core.model import LoadedModel
from slimscope.core.tasks import Progress, Task, run_in_child

KIND_NAMES = {"torchscript": "TorchScript file", "torch.export": "torch.export program (.pt2)"}
CONVERSION_TIMEOUT_S = 30 * 60


def iter_load_torch(
    path: Path, kind: str, *, trust: bool, input_shapes: list[tuple[int, ...]] | None
) -> Task[LoadedModel]:
    if not trust:
        raise UntrustedModelError(
            f"'{path.name}' is a {KIND_NAMES[kind]}, which can run code stored in it when opened; "
            "open it only if you trust where it came from (--trust on the command line)."
        )
    from slimscope.core.loading.onnx_loader import iter_load_onnx

    work = Path(tempfile.mkdtemp(prefix="slimscope-convert-"))
    try:
        args = [kind, str(path.resolve()), str(work)]
        if input_shapes:
            args.append(",".join("x".join(str(d) for d in s) for s in input_shapes))
        answer = yield from run_in_child(
            "slimscope.core.loading.torch_convert", args,
            message=f"Converting {path.name} to ONNX", timeout=CONVERSION_TIMEOUT_S,
        )  # fmt: skip
        # The user's shapes are checked against the converted model: a .pt2 program has fixed shapes.
        loaded = yield from iter_load_onnx(Path(answer["onnx"]), input_shapes, fmt=kind)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    loaded.source = path
    loaded.file_size = path.stat().st_size
    loaded.external_files = []  # they were the converter's temporary files, now deleted
    loaded.notes.insert(0, f"Converted from a {KIND_NAMES[kind]} to ONNX with torch.onnx.export.")
    yield Progress(1.0, "Converted")
    return loaded
