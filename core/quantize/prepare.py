"""Bring a model into the shape onnxruntime's quantizer handles well, on a copy.

- opset >= 13, so that per-channel DequantizeLinear may carry an `axis` (the loader does this for
  files; models built in memory may still be older);
- every weighted node named after its layer, so that recipes, `nodes_to_exclude` and the result all
  speak layer names (and nodes without names get one: onnxruntime matches nodes by name);
- `quant_pre_process` (onnxruntime's optimizer folds BatchNormalization into Conv, MatMul + Add into
  Gemm, and cleans up), with a fallback when it fails on a graph.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnxruntime.quantization import quant_pre_process

from slimscope.core.layers import WEIGHTED_OPS, Layer
from slimscope.core.loading.opset_upgrade import upgrade_opset
from slimscope.core.user_files import clear_private_working_directory

_PRE_PROCESS_LOGGER = "onnxruntime.quantization.shape_inference"


@dataclass(frozen=True)
class PreparedModel:
    """The model calibration and quantization work on, and what preparing it changed."""

    model: onnx.ModelProto
    notes: tuple[str, ...]
    lost_layers: tuple[str, ...]  # layers pre-processing folded away (no node of that name is left)


def prepare_model(
    model: onnx.ModelProto, layers: list[Layer], input_shapes: dict[str, tuple[int, ...]]
) -> PreparedModel:
    """A prepared copy of `model`, ready for the quantizer (opset, node names, pre-processing)."""
    work = _copy(model)
    _name_layer_nodes(work, layers)  # before the converter, which may insert nodes and shift the indices
    work, note = upgrade_opset(work)
    _name_other_nodes(work, {layer.name for layer in layers})
    notes = [note] if note else []
    free = _free_input_dims(work)
    if free:
        # Fixing free sizes to the calibration data's would bake them into the exported model (a
        # detector that took any image size would take only one); symbolic shape inference is the
        # part of pre-processing that needs them, so it is skipped instead.
        notes.append(f"Kept the free input sizes of {', '.join(map(repr, free))}; pre-processing ran without "
                     "symbolic shape inference.")  # fmt: skip
    processed, failure = _pre_process(work, (True,) if free else (False, True))
    if processed is None:
        notes.append(
            f"Quantized without onnxruntime's pre-processing, which failed on this model ({failure})."
        )
        processed = _with_shapes(work)
    _drop_unused_domains(processed)
    lost = _rename_layer_nodes(processed, layers)
    if lost:
        notes.append(f"Pre-processing folded away {len(lost)} layers: {', '.join(map(repr, lost[:5]))}.")
    return PreparedModel(processed, tuple(notes), tuple(lost))


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _name_layer_nodes(model: onnx.ModelProto, layers: list[Layer]) -> None:
    """Weighted nodes take their layer's name; another node that has one of those names loses it."""
    nodes = model.graph.node
    names = {layer.name for layer in layers}
    indices = {layer.node_index for layer in layers}
    for index, node in enumerate(nodes):
        if index not in indices and node.name in names:
            node.name = ""
    for layer in layers:
        nodes[layer.node_index].name = layer.name


def _name_other_nodes(model: onnx.ModelProto, layer_names: set[str]) -> None:
    """Unique names for the other nodes (onnxruntime's quantizer matches nodes by name)."""
    taken = set(layer_names)
    for index, node in enumerate(model.graph.node):
        if node.name in layer_names:
            continue
        base, n = node.name or f"{node.op_type}_{index}", 2
        candidate = base
        while candidate in taken:
            candidate, n = f"{base}_{n}", n + 1
        node.name = candidate
        taken.add(candidate)


def _free_input_dims(model: onnx.ModelProto) -> list[str]:
    """Inputs with a free dim other than the batch (the first)."""
    weights = {t.name for t in model.graph.initializer}
    free = []
    for value in model.graph.input:
        dims = value.type.tensor_type.shape.dim
        if value.name not in weights and any(not d.HasField("dim_value") for d in list(dims)[1:]):
            free.append(value.name)
    return free


def _pre_process(model: onnx.ModelProto, attempts: tuple[bool, ...]) -> tuple[onnx.ModelProto | None, str]:
    """`quant_pre_process` with each `skip_symbolic_shape` setting in turn; (None, why) if all fail.

    The model goes to onnxruntime as a file in a private folder, not as a ModelProto: given a proto,
    its optimizer step swaps every weight for an external-data placeholder named `foo.bin` *in that
    proto*, and when the optimizer then fails (PaddlePaddle exports whose Slice reads a weight) it
    logs the error and returns the damaged proto as if all were well.
    """
    failure = ""
    with tempfile.TemporaryDirectory(prefix="slimscope-preprocess-") as folder:
        source = Path(folder) / "model.onnx"
        _save(model, source)
        for skip_symbolic in attempts:
            target = Path(folder) / f"preprocessed-{int(skip_symbolic)}.onnx"
            try:
                with _quiet(_PRE_PROCESS_LOGGER):
                    quant_pre_process(str(source), str(target), skip_symbolic_shape=skip_symbolic)
                processed = onnx.load_model(target)
            except Exception as exc:  # symbolic shape inference raises and asserts on some graphs
                text = str(exc).strip()
                failure = (text.splitlines()[0][:200] if text else "") or type(exc).__name__
                continue
            finally:  # symbolic shape inference that gives up leaves a copy of the weights in the cwd
                clear_private_working_directory()
            if _has_external_data(processed):
                failure = "its result pointed to weight files it did not write"
                continue
            return processed, ""
    return None, failure


def _save(model: onnx.ModelProto, path: Path) -> None:
    """Write `model` for onnxruntime to read; weights go to a data file beside it past protobuf's 2 GiB."""
    if model.ByteSize() < 2**31 - 2**26:
        onnx.save_model(model, path)
        return
    copy = _copy(model)
    onnx.save_model(copy, path, save_as_external_data=True, location=path.name + ".data")


def _has_external_data(model: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Silence a logger for a block (the pre-processor logs a traceback when its optimizer fails and
    then carries on without it, which is what we want)."""
    logger = logging.getLogger(name)
    disabled, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = disabled


def _with_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # the quantizer runs shape inference itself; ours only adds value_info early
        return model


def _drop_unused_domains(model: onnx.ModelProto) -> None:
    """onnxruntime's optimizer saves an import of every domain it knows (ai.onnx.ml, training, ...);
    keep those the graph uses, so the quantized model declares what it needs and no more."""
    used = {node.domain or "" for node in model.graph.node} | {""}
    for function in model.functions:
        used |= {function.domain} | {node.domain or "" for node in function.node}
    kept = [
        entry for entry in model.opset_import if (entry.domain or "") in used or entry.domain == "ai.onnx"
    ]
    if len(kept) < len(model.opset_import):
        model.ClearField("opset_import")
        model.opset_import.extend(kept)


def _rename_layer_nodes(model: onnx.ModelProto, layers: list[Layer]) -> list[str]:
    """Find each layer's node after pre-processing and give it the layer's name back; return the lost.

    onnxruntime's fusions keep the surviving node's name (Conv + BatchNormalization), derive one from it
    (MatMul + Add becomes Gemm `<name>/MatMulAddFusion`), or keep only the weight's name.
    """
    weighted = [n for n in model.graph.node if n.op_type in WEIGHTED_OPS and n.domain in ("", "ai.onnx")]
    claimed = {n.name for n in weighted} & {layer.name for layer in layers}
    lost = []
    for layer in layers:
        if layer.name in claimed:
            continue
        free = [n for n in weighted if n.name not in claimed]
        node = next((n for n in free if n.name.startswith(layer.name + "/")), None)
        node = node or next((n for n in free if layer.weight in n.input), None)
        if node is None:
            lost.append(layer.name)
            continue
        node.name = layer.name
        claimed.add(layer.name)
    return lost
