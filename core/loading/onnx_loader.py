"""Open an ONNX file into one in-memory model: checked first, then its weights, then normalized."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto

from slimscope.core.errors import ModelLoadError
from slimscope.core.loading import onnx_checks
from slimscope.core.loading.constant_folding import fold_constants
from slimscope.core.loading.free_dims import name_free_dims
from slimscope.core.loading.input_shapes import declared_input_shapes, merge_input_shapes
from slimscope.core.loading.local_functions import inline_local_functions
from slimscope.core.loading.opset_upgrade import upgrade_opset
from slimscope.core.loading.quant_checks import check_quantization
from slimscope.core.loading.runtime_support import runtime_limits
from slimscope.core.loading.sparse_weights import densify_sparse_weights
from slimscope.core.loading.weight_checks import check_weights, weight_notes
from slimscope.core.model import LoadedModel, default_opset
from slimscope.core.tasks import Progress, Task

_PROTOBUF_LIMIT = 2**31 - 1


def iter_load_onnx(
    path: Path, input_shapes: list[tuple[int, ...]] | None = None, fmt: str = "onnx"
) -> Task[LoadedModel]:
    yield Progress(0.0, f"Reading {path.name}")
    model = parse_onnx_file(path)
    onnx_checks.check_tensor_sizes(model)
    onnx_checks.check_versions(model, *runtime_limits(default_opset(model), model.ir_version))
    model, functions = inline_local_functions(model)  # before the graph checks: they see the bodies
    onnx_checks.check_graph(model)
    yield Progress(0.4, "Reading external weights")
    external_files = load_external_data(model, path.parent)
    densified = densify_sparse_weights(model)
    yield Progress(0.6, "Preparing the model")
    model, notes = normalize(model)
    check_quantization(model)  # on the folded model: Constant-node parameters are weights by now
    check_weights(model)
    if functions:
        notes.insert(0, f"Expanded {functions} local function{'s' if functions > 1 else ''} into the graph, "
                         "so that the layers inside show.")  # fmt: skip
    if densified:
        notes.append(f"Stored {densified} sparse weight{'s' if densified > 1 else ''} densely, so that "
                     f"{'they' if densified > 1 else 'it'} can be shown and optimized.")  # fmt: skip
    notes += weight_notes(model)
    shapes = merge_input_shapes(declared_input_shapes(model), input_shapes)
    return LoadedModel(
        model=model,
        source=path,
        format=fmt,
        file_size=path.stat().st_size + sum(f.stat().st_size for f in external_files),
        input_shapes=shapes,
        notes=notes,
        external_files=external_files,
    )


def parse_onnx_file(path: Path) -> onnx.ModelProto:
    size = path.stat().st_size
    if size == 0:
        raise ModelLoadError(f"'{path.name}' is empty.")
    if size > _PROTOBUF_LIMIT:
        raise ModelLoadError(
            f"'{path.name}' is larger than 2 GiB; an ONNX file that big must keep its weights in "
            "external data files."
        )
    try:
        model = onnx.load_model_from_string(path.read_bytes())
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(
            f"'{path.name}' is not a readable ONNX model (it is damaged, truncated, or another kind of file)."
        ) from exc
    if not model.HasField("graph") or not model.graph.node:
        raise ModelLoadError(f"'{path.name}' holds no model graph (it is truncated or not an ONNX model).")
    return model


def load_external_data(model: onnx.ModelProto, base_dir: Path) -> list[Path]:
    """Read every externally stored tensor into memory; return the files read."""
    wanted: dict[Path, list[tuple[TensorProto, int, int]]] = defaultdict(list)
    for tensor, _where in onnx_checks.iter_tensors(model.graph):
        if tensor.data_location == TensorProto.EXTERNAL:
            target, offset, length = onnx_checks.resolve_external_path(tensor, base_dir)
            wanted[target].append((tensor, offset, length))
    for target, tensors in wanted.items():
        with open(target, "rb") as handle:
            for tensor, offset, length in tensors:
                handle.seek(offset)
                data = handle.read(length)
                if len(data) != length:
                    raise ModelLoadError(f"The external data file '{target.name}' ended early.")
                tensor.raw_data = data
                del tensor.external_data[:]
                tensor.data_location = TensorProto.DEFAULT
    return list(wanted)


def normalize(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Make weights real initializers and the opset current; say what was changed, in words."""
    notes = []
    removed = remove_initializer_inputs(model)
    if removed:
        notes.append(f"Removed {removed} weights that were also listed as graph inputs.")
    model, note = upgrade_opset(model)  # before folding: the converter itself adds Constant nodes
    if note:
        notes.append(note)
    dropped = drop_unused_domains(model)
    if dropped:
        notes.append(f"Dropped {len(dropped)} operator domains the model declares but never uses "
                     f"({', '.join(map(repr, dropped))}).")  # fmt: skip
    named = name_free_dims(model)
    if named:
        notes.append(f"Read {named} dimensions written as -1 or 0 as free sizes.")
    folded = fold_constants(model)
    if folded:
        notes.append(f"Folded {folded} nodes that compute constants into weights.")
    return model, notes


def drop_unused_domains(model: onnx.ModelProto) -> list[str]:
    """Remove opset imports of domains no node uses (besides ONNX's own); return their names."""
    used = onnx_checks.used_domains(model) | {"", "ai.onnx"}
    dropped = [entry.domain for entry in model.opset_import if entry.domain not in used]
    if dropped:
        kept = [entry for entry in model.opset_import if entry.domain in used]
        model.ClearField("opset_import")
        model.opset_import.extend(kept)
    return dropped


def remove_initializer_inputs(model: onnx.ModelProto) -> int:
    """Drop graph inputs that merely repeat an initializer (IR < 4 files); return how many."""
    weights = {t.name for t in model.graph.initializer}
    kept = [v for v in model.graph.input if v.name not in weights]
    removed = len(model.graph.input) - len(kept)
    if removed:
        del model.graph.input[:]
        model.graph.input.extend(kept)
        model.ir_version = max(model.ir_version, 4)
    return removed
