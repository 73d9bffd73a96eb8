"""Checks on a parsed ONNX model that run before any weight is allocated or any runtime sees it.

onnx's own checker is stricter than onnxruntime on some real files (and needs every weight in memory),
so these checks look only for what makes a model unusable or unsafe: tensors whose declared size is
absurd or disagrees with the bytes stored, external data outside the model's folder, operators nobody
can run, and references to values nothing produces (a damaged or truncated file).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import onnx
from onnx import TensorProto

from slimscope.core.errors import ModelLoadError
from slimscope.core.loading.graph_order import check_graph_order

# Real weights have a handful of dimensions (numpy stops at 64); more means a damaged file.
_MAX_RANK = 32

# One tensor larger than this is refused before anything is allocated (bytes).
MAX_TENSOR_BYTES = 4 << 30

# Operator domains onnxruntime's CPU build knows. Anything else is a custom-op library we do not have.
KNOWN_DOMAINS = frozenset(
    {
        "",
        "ai.onnx",
        "ai.onnx.ml",
        "com.microsoft",
        "com.microsoft.nchwc",
        "com.microsoft.experimental",
        "ai.onnx.preview.training",
        "com.ms.internal.nhwc",
    }
)
_ONNX_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
_PACKED_4BIT = frozenset({TensorProto.INT4, TensorProto.UINT4, getattr(TensorProto, "FLOAT4E2M1", -1)})


def iter_tensors(graph: onnx.GraphProto, where: str = "the graph") -> Iterator[tuple[TensorProto, str]]:
    """Every tensor stored in a graph: initializers, tensor attributes, and those of subgraphs."""
    for tensor in graph.initializer:
        yield tensor, where
    for sparse in graph.sparse_initializer:
        yield sparse.values, where
        yield sparse.indices, where
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t, f"the node '{node.name or node.op_type}'"
            for tensor in attr.tensors:
                yield tensor, f"the node '{node.name or node.op_type}'"
            if attr.HasField("g"):
                yield from iter_tensors(attr.g, f"the subgraph of '{node.name or node.op_type}'")
            for sub in attr.graphs:
                yield from iter_tensors(sub, f"the subgraph of '{node.name or node.op_type}'")


def tensor_nbytes(tensor: TensorProto) -> int:
    """Bytes the tensor's declared shape and type need (strings count their elements)."""
    numel = math.prod(tensor.dims)
    if tensor.data_type in _PACKED_4BIT:
        return (numel + 1) // 2
    if tensor.data_type in (TensorProto.STRING, TensorProto.UNDEFINED):
        return numel
    itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return numel * itemsize


def check_tensor_sizes(model: onnx.ModelProto) -> None:
    """Refuse negative or absurd dims, and in-file data whose length disagrees with the shape."""
    for tensor, where in iter_tensors(model.graph):
        name = tensor.name or "(unnamed)"
        if len(tensor.dims) > _MAX_RANK:
            raise ModelLoadError(
                f"Tensor '{name}' in {where} has {len(tensor.dims)} dimensions: the file is damaged."
            )
        if any(d < 0 for d in tensor.dims):
            raise ModelLoadError(
                f"Tensor '{name}' in {where} has a negative dimension {list(tensor.dims)}: the file is damaged."
            )
        if tensor.data_type == TensorProto.UNDEFINED:
            raise ModelLoadError(f"Tensor '{name}' in {where} has no data type: the file is damaged.")
        try:
            nbytes = tensor_nbytes(tensor)
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelLoadError(f"Tensor '{name}' has an unknown data type ({tensor.data_type}).") from exc
        if nbytes > MAX_TENSOR_BYTES:
            raise ModelLoadError(
                f"Tensor '{name}' declares shape {list(tensor.dims)} ({nbytes / 2**30:,.1f} GiB), more "
                f"than the {MAX_TENSOR_BYTES >> 30} GiB Slimscope allocates for one tensor."
            )
        if tensor.data_location == TensorProto.EXTERNAL:
            continue
        if tensor.HasField("raw_data"):
            if len(tensor.raw_data) != nbytes:
                raise ModelLoadError(
                    f"Tensor '{name}' declares shape {list(tensor.dims)} ({nbytes} bytes) but stores "
                    f"{len(tensor.raw_data)} bytes: the file is damaged."
                )
            continue
        _check_typed_data(tensor, name)


def _check_typed_data(tensor: TensorProto, name: str) -> None:
    """Tensors stored in typed fields (float_data, int32_data, ...) hold one entry per element."""
    try:
        field = onnx.helper.tensor_dtype_to_field(tensor.data_type)
    except (KeyError, ValueError, TypeError):
        return
    stored = len(getattr(tensor, field))
    numel = math.prod(tensor.dims)
    if stored == 0 and numel == 0:
        return
    if tensor.data_type in (TensorProto.COMPLEX64, TensorProto.COMPLEX128):
        expected = 2 * numel
    elif tensor.data_type in _PACKED_4BIT:
        expected = (numel + 1) // 2
    else:
        expected = numel
    if stored != expected:
        raise ModelLoadError(
            f"Tensor '{name}' declares shape {list(tensor.dims)} ({numel} elements) but stores "
            f"{stored} values: the file is damaged."
        )


def external_data_info(tensor: TensorProto) -> dict[str, str]:
    return {entry.key: entry.value for entry in tensor.external_data}


def resolve_external_path(tensor: TensorProto, base_dir: Path) -> tuple[Path, int, int]:
    """Where an external tensor's bytes are: (file, offset, length), refusing anything unsafe."""
    info = external_data_info(tensor)
    name = tensor.name or "(unnamed)"
    location = info.get("location", "")
    if not location:
        raise ModelLoadError(f"Tensor '{name}' is stored externally but names no file.")
    relative = Path(location)
    if relative.is_absolute() or ".." in relative.parts or location.startswith(("/", "\\")):
        raise ModelLoadError(
            f"Tensor '{name}' points to external data '{location}' outside the model's folder; "
            "Slimscope only reads data files that sit beside the model."
        )
    target = base_dir / relative
    _refuse_symlinks(base_dir, relative, name)
    if not target.is_file():
        raise ModelLoadError(
            f"The external data file '{location}' for tensor '{name}' is missing; it must sit in "
            f"the model's folder ({base_dir})."
        )
    real_base, real_target = os.path.realpath(base_dir), os.path.realpath(target)
    if os.path.commonpath([real_base, real_target]) != real_base:
        raise ModelLoadError(
            f"External data '{location}' of tensor '{name}' lies outside the model's folder."
        )
    try:
        offset = int(info.get("offset", "0"))
        given_length = int(info["length"]) if "length" in info else None
    except ValueError as exc:
        raise ModelLoadError(f"Tensor '{name}' has an unreadable external data offset or length.") from exc
    size = target.stat().st_size
    expected = tensor_nbytes(tensor)
    length = expected if given_length is None else given_length
    if offset < 0 or length < 0 or offset + length > size:
        raise ModelLoadError(
            f"Tensor '{name}' wants bytes {offset}..{offset + length} of '{location}', which has only "
            f"{size} bytes: the data file is truncated or does not belong to this model."
        )
    if length != expected:
        raise ModelLoadError(
            f"Tensor '{name}' declares shape {list(tensor.dims)} ({expected} bytes) but its external "
            f"data holds {length} bytes."
        )
    return target, offset, length


def _refuse_symlinks(base_dir: Path, relative: Path, name: str) -> None:
    current = base_dir
    for part in relative.parts:
        current = current / part
        if current.is_symlink():
            raise ModelLoadError(
                f"External data of tensor '{name}' goes through the symbolic link '{current}'; "
                "Slimscope does not follow links out of a model's folder."
            )


def check_versions(model: onnx.ModelProto, max_opset: int, max_ir: int) -> None:
    """Refuse IR versions and opsets newer than the runtime supports, and unknown domains."""
    if model.ir_version > max_ir:
        raise ModelLoadError(
            f"The model uses ONNX IR version {model.ir_version}; the installed onnxruntime supports up "
            f"to {max_ir}."
        )
    local_domains = {f.domain for f in model.functions}
    used = used_domains(model)
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx") and entry.version > max_opset:
            raise ModelLoadError(
                f"The model needs ONNX opset {entry.version}; the installed onnxruntime supports up to "
                f"opset {max_opset}."
            )
        # A domain that is declared but no node uses (optimizers save an import of every domain they
        # know) costs nothing at run time: only a used one must be one onnxruntime has.
        if entry.domain not in KNOWN_DOMAINS and entry.domain not in local_domains and entry.domain in used:
            raise ModelLoadError(
                f"The model uses operators from the domain '{entry.domain}', a custom-operator library "
                "that onnxruntime does not have, so it cannot run."
            )


def used_domains(model: onnx.ModelProto) -> set[str]:
    """Domains that some node of the graph, its subgraphs or its local functions uses ("" for ONNX)."""
    used = {node.domain for node in _iter_nodes(model.graph)}
    for function in model.functions:
        used |= {node.domain for node in function.node}
    return {"" if domain == "ai.onnx" else domain for domain in used}


def check_graph(model: onnx.ModelProto) -> None:
    """The graph is complete: it has nodes and outputs, every value read is produced once, in an order
    that can run (no cycle), and its operators exist."""
    graph = model.graph
    if not graph.node or not graph.output:
        raise ModelLoadError("The file holds no model graph (it is empty, truncated, or not an ONNX model).")
    _check_names_are_text(model)
    opsets = {e.domain or "ai.onnx": e.version for e in model.opset_import}
    functions = {(f.domain, f.name) for f in model.functions}
    _check_values_defined(graph, set())
    check_graph_order(graph)
    for node in _iter_nodes(graph):
        _check_operator(node, opsets, functions)


def _check_names_are_text(model: onnx.ModelProto) -> None:
    """protobuf hands back invalid UTF-8 in string fields as bytes: a sign of a damaged file."""
    graph = model.graph
    names = [e.domain for e in model.opset_import]
    names += [model.producer_name, model.producer_version, model.domain, graph.name]
    names += [v.name for v in (*graph.input, *graph.output, *graph.initializer, *graph.value_info)]
    for node in _iter_nodes(graph):
        names += [node.op_type, node.domain, node.name, *node.input, *node.output]
        names += [a.name for a in node.attribute]
    if any(not isinstance(name, str) for name in names):
        raise ModelLoadError("The model contains names that are not valid text: the file is damaged.")


def _check_values_defined(graph: onnx.GraphProto, outer: set[str]) -> None:
    known = set(outer)
    known.update(v.name for v in graph.input)
    known.update(t.name for t in graph.initializer)
    known.update(s.values.name for s in graph.sparse_initializer)
    for node in graph.node:
        known.update(node.output)
    for node in graph.node:
        for name in node.input:
            if name and name not in known:
                raise ModelLoadError(
                    f"Node '{node.name or node.op_type}' reads '{name}', which nothing in the model "
                    "produces: the file is damaged or incomplete."
                )
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                _check_values_defined(sub, known)
    for output in graph.output:
        if output.name not in known:
            raise ModelLoadError(
                f"The model output '{output.name}' is produced by no node: the file is damaged."
            )


def _iter_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield from _iter_nodes(sub)


def _check_operator(node: onnx.NodeProto, opsets: dict[str, int], functions: set) -> None:
    domain = node.domain or "ai.onnx"
    if (node.domain, node.op_type) in functions:
        return
    if domain not in opsets:
        raise ModelLoadError(
            f"Node '{node.name or node.op_type}' uses the domain '{node.domain}', which the model never imports."
        )
    if domain not in _ONNX_DOMAINS:
        return  # onnxruntime's own contrib ops: the runtime is the judge.
    schema_domain = "" if domain == "ai.onnx" else domain
    if not onnx.defs.has(node.op_type, schema_domain):
        raise ModelLoadError(
            f"Node '{node.name or node.op_type}' uses the operator '{node.op_type}', which is not an ONNX "
            "operator (a custom operator needs its own runtime library)."
        )
    try:
        onnx.defs.get_schema(node.op_type, opsets[domain], schema_domain)
    except onnx.defs.SchemaError as exc:
        raise ModelLoadError(
            f"The operator '{node.op_type}' does not exist in opset {opsets[domain]}, which the model declares."
        ) from exc
