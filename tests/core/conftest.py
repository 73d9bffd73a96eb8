"""Shared fixtures for the core tests: tiny ONNX models written into tmp_path, an onnxruntime runner,
and the checks every loader test makes — nothing is written beside the model, and no file outside the
model's folder is opened.

Test modules are imported with --import-mode=importlib, so helpers reach them as fixtures only.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from slimscope.core.loading import load_model
from slimscope.core.model import LoadedModel

FolderState = dict[str, tuple[int, int]]


def snapshot_folder(folder: Path) -> FolderState:
    """Names, mtimes and sizes of a folder's entries, and the folder's own mtime.

    The folder's mtime catches a file written and deleted again (as onnxruntime's quantizer does with
    `<stem>-inferred.onnx`), which a listing alone would miss.
    """
    state: FolderState = {".": (folder.stat().st_mtime_ns, 0)}
    with os.scandir(folder) as entries:
        for entry in entries:
            info = entry.stat(follow_symlinks=False)
            state[entry.name] = (info.st_mtime_ns, info.st_size)
    return state


_LONG_AGO_NS = 1_000_000_000 * 10**9  # 2001-09-09: any write after this sets a visibly newer mtime


def age_folder(folder: Path) -> None:
    """Set the mtimes of the folder and its entries far in the past, so that a write in the same clock
    tick as the file's creation (timestamps are coarse, ~4 ms) still changes them."""
    for path in [folder, *folder.iterdir()]:
        atime = path.lstat().st_atime_ns
        os.utime(path, ns=(atime, _LONG_AGO_NS), follow_symlinks=False)


@contextmanager
def folder_untouched_context(folder: Path) -> Iterator[None]:
    age_folder(folder)
    before = snapshot_folder(folder)
    try:
        yield
    finally:
        after = snapshot_folder(folder)
        assert after == before, f"something was written in {folder}: {sorted(set(after) ^ set(before))}"


@pytest.fixture(scope="session")
def folder_untouched() -> Callable[[Path], AbstractContextManager[None]]:
    """`with folder_untouched(folder): ...` fails if the block changed anything in `folder`."""
    return folder_untouched_context


@pytest.fixture(scope="session")
def load_untouched() -> Callable[..., LoadedModel]:
    """`load_model`, asserting (also when it raises) that the model's folder was left as it was."""

    def load(path: str | os.PathLike, **kwargs) -> LoadedModel:
        folder = Path(path).parent
        if not folder.is_dir():
            return load_model(path, **kwargs)
        with folder_untouched_context(folder):
            return load_model(path, **kwargs)

    return load


# ---------------------------------------------------------------------------------------------------
# What a block of code does that a hostile file could ask for: open files, unpickle, start processes.
# Python's audit hooks see every Python-level `open` (how the loader reads every file) and every global
# an unpickler looks up.

_WATCHED_EVENTS = frozenset(
    {"open", "pickle.find_class", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn"}
)
_RECORDINGS: list[list[tuple[str, tuple]]] = []
_AUDIT_INSTALLED = False


def _audit(event: str, args: tuple) -> None:
    if _RECORDINGS and event in _WATCHED_EVENTS:
        _RECORDINGS[-1].append((event, args))


@dataclass
class AuditLog:
    events: list[tuple[str, tuple]]

    @property
    def opened(self) -> list[str]:
        """Real paths of the files opened (file descriptors and the like left out)."""
        return [
            os.path.realpath(os.fsdecode(args[0]))
            for event, args in self.events
            if event == "open" and isinstance(args[0], str | bytes | os.PathLike)
        ]

    @property
    def unpickled(self) -> list[str]:
        return [f"{args[0]}.{args[1]}" for event, args in self.events if event == "pickle.find_class"]

    @property
    def processes(self) -> list[tuple]:
        return [args for event, args in self.events if event != "open" and event != "pickle.find_class"]


@pytest.fixture
def audit() -> Callable[[], AbstractContextManager[AuditLog]]:
    """`with audit() as log: ...` — `log.opened`, `log.unpickled`, `log.processes` in the block."""
    global _AUDIT_INSTALLED
    if not _AUDIT_INSTALLED:  # audit hooks cannot be removed: install one, active only while recording
        sys.addaudithook(_audit)
        _AUDIT_INSTALLED = True

    @contextmanager
    def record() -> Iterator[AuditLog]:
        log = AuditLog([])
        _RECORDINGS.append(log.events)
        try:
            yield log
        finally:
            _RECORDINGS.pop()

    return record


# ---------------------------------------------------------------------------------------------------
# Tiny ONNX models.

ONNX_OPSET = 13
ONNX_IR = 8  # every onnxruntime Slimscope supports runs it; helper.make_model's default may be newer


@dataclass
class ConvNet:
    """Conv(3→4, 3x3) + Relu + Flatten + Gemm(256→5) on a [N, 3, 8, 8] input."""

    model: onnx.ModelProto
    weights: dict[str, np.ndarray]


def build_conv_net(seed: int = 0) -> ConvNet:
    rng = np.random.default_rng(seed)
    weights = {
        "conv.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "conv.bias": rng.standard_normal(4).astype(np.float32),
        "fc.weight": rng.standard_normal((5, 256)).astype(np.float32) * 0.1,
        "fc.bias": rng.standard_normal(5).astype(np.float32),
    }
    nodes = [
        helper.make_node(
            "Conv", ["input", "conv.weight", "conv.bias"], ["c"], name="conv", pads=[1, 1, 1, 1]
        ),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_net",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    model = make_model(graph)
    onnx.checker.check_model(model, full_check=True)
    return ConvNet(model, weights)


def make_model(graph: onnx.GraphProto, opset: int = ONNX_OPSET, ir_version: int = ONNX_IR) -> onnx.ModelProto:
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)


def build_small_model(
    nodes: list[onnx.NodeProto],
    initializers: Sequence[TensorProto] = (),
    *,
    inputs: list[onnx.ValueInfoProto] | None = None,
    outputs: Sequence[str] = ("y",),
    opset: int = ONNX_OPSET,
    ir_version: int = ONNX_IR,
) -> onnx.ModelProto:
    """A graph around `nodes` with one float input `x` [1, 4] (unless `inputs` is given)."""
    if inputs is None:
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])]
    graph = helper.make_graph(
        nodes,
        "small",
        inputs,
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
        list(initializers),
    )
    return make_model(graph, opset, ir_version)


@pytest.fixture
def conv_net() -> ConvNet:
    return build_conv_net()


@pytest.fixture
def small_model() -> Callable[..., onnx.ModelProto]:
    """`small_model(nodes, initializers, inputs=..., outputs=..., opset=..., ir_version=...)`."""
    return build_small_model


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """The folder model files are written to: nothing else (markers, outside files) lives in it."""
    folder = tmp_path / "model"
    folder.mkdir()
    return folder


@pytest.fixture
def save_onnx(model_dir: Path) -> Callable[..., Path]:
    """`save_onnx(model, name="model.onnx", **onnx_save_kwargs)` writes into `model_dir`."""

    def save(model: onnx.ModelProto, name: str = "model.onnx", **kwargs) -> Path:
        path = model_dir / name
        onnx.save_model(model, path, **kwargs)
        return path

    return save


@pytest.fixture(scope="session")
def run_onnx() -> Callable[..., list[np.ndarray]]:
    """`run_onnx(model_or_path, feeds)`: the outputs onnxruntime computes on the CPU."""
    import onnxruntime as ort

    def run(model: onnx.ModelProto | str | os.PathLike, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
        session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        return session.run(None, feeds)

    return run


def initializers_of(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.fixture(scope="session")
def weights_of() -> Callable[[onnx.ModelProto], dict[str, np.ndarray]]:
    """`weights_of(model)`: the model's initializers as numpy arrays, by name."""
    return initializers_of
