"""Every file Slimscope refuses: it raises the specific `ModelLoadError` with one sentence naming the file
or the problem, never crashes with another exception, never runs a pickle, never reads outside the
model's folder, never allocates what a file merely claims, and never writes beside the model."""

from __future__ import annotations

import pathlib
import pickle
import resource
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnx.reference
import pytest
from onnx import TensorProto, helper, numpy_helper

from slimscope.core.errors import ModelLoadError, PickleRefusedError


def expect_refusal(load, path: Path, error: type[ModelLoadError], *fragments: str, **kwargs) -> str:
    """Load, expecting `error` whose one-line message contains every fragment; return the message."""
    with pytest.raises(error) as caught:
        load(path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def add_weight_model(small_model, weight: TensorProto) -> onnx.ModelProto:
    """y = x + w, x and w of shape [1, 4]."""
    return small_model([helper.make_node("Add", ["x", weight.name], ["y"], name="add")], [weight])


def float_weight(values=(1.0, 2.0, 3.0, 4.0), name: str = "w") -> TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.float32).reshape(1, -1), name)


# ---------------------------------------------------------------------------------------------------
# Files that are no model, or a damaged one


def test_empty_file(model_dir, load_untouched):
    path = model_dir / "empty.onnx"
    path.write_bytes(b"")

    expect_refusal(load_untouched, path, ModelLoadError, "'empty.onnx' is empty")


def _truncation_points(size: int) -> list[int]:
    return [1, 10, size // 4, size // 2, size - 100, size - 3, size - 1]


@pytest.mark.parametrize("point", range(7), ids=["1", "10", "quarter", "half", "len-100", "len-3", "len-1"])
def test_truncated_onnx(point, conv_net, save_onnx, load_untouched):
    whole = save_onnx(conv_net.model, "whole.onnx").read_bytes()
    cut = _truncation_points(len(whole))[point]
    path = save_onnx(conv_net.model, "cut.onnx")
    path.write_bytes(whole[:cut])

    message = expect_refusal(load_untouched, path, ModelLoadError)
    assert "cut.onnx" in message or "truncated" in message or "damaged" in message, message


def test_every_truncation_of_a_small_model_is_refused(small_model, save_onnx, load_untouched):
    model = add_weight_model(small_model, float_weight())
    whole = model.SerializeToString()
    path = save_onnx(model, "cut.onnx")
    load_untouched(path)  # the whole file loads

    for cut in range(1, len(whole)):
        path.write_bytes(whole[:cut])
        with pytest.raises(ModelLoadError):
            load_untouched(path)
            pytest.fail(f"the first {cut} of {len(whole)} bytes loaded as a model")


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes(seed, model_dir, load_untouched):
    path = model_dir / "noise.onnx"
    path.write_bytes(np.random.default_rng(seed).bytes(2000))

    expect_refusal(load_untouched, path, ModelLoadError)


@pytest.mark.parametrize("name", ["notes.onnx", "README.txt", "model.pt"])
def test_text_file(name, model_dir, load_untouched):
    path = model_dir / name
    path.write_text("This is not a model.\nIt is some notes about one.\n")

    expect_refusal(load_untouched, path, ModelLoadError, f"'{name}'", "text file")


def test_a_model_without_a_graph(model_dir, load_untouched):
    path = model_dir / "nograph.onnx"
    path.write_bytes(onnx.ModelProto(ir_version=8).SerializeToString())

    expect_refusal(load_untouched, path, ModelLoadError, "'nograph.onnx' holds no model graph")


def test_a_zip_archive_that_is_no_pytorch_file(model_dir, load_untouched):
    path = model_dir / "bundle.onnx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")

    expect_refusal(load_untouched, path, ModelLoadError, "'bundle.onnx' is a zip archive")


def test_another_framework_s_file_says_what_it_is(model_dir, load_untouched):
    path = model_dir / "model.tflite"
    path.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(range(200)))

    expect_refusal(load_untouched, path, ModelLoadError, "'model.tflite'", "TensorFlow Lite")


def test_a_directory(model_dir, load_untouched):
    expect_refusal(load_untouched, model_dir, ModelLoadError, str(model_dir), "folder")


def test_a_missing_path(model_dir, load_untouched):
    expect_refusal(load_untouched, model_dir / "nope.onnx", ModelLoadError, "nope.onnx", "does not exist")


# ---------------------------------------------------------------------------------------------------
# Pickles are never unpickled


class Touch:
    """Unpickling this creates the marker file: the stand-in for any code a pickle can run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    folder = tmp_path / "markers"
    folder.mkdir()
    return folder / "pickle-ran"


def test_the_pickle_payload_is_live(marker, audit):
    with audit() as log:
        pickle.loads(pickle.dumps(Touch(marker), protocol=0))  # what the loader must never do

    assert marker.exists()
    assert log.unpickled  # the audit log sees unpickling, so its silence below means something


@pytest.mark.parametrize(
    ("name", "protocol", "says"),
    [
        ("evil.pkl", 5, "Python pickle"),
        ("evil.pkl", 0, "Python pickle"),
        ("evil.pth", 2, "checkpoint"),
        ("evil.pth", 0, "checkpoint"),
        ("evil.onnx", 4, "Python pickle"),
        ("evil.onnx", 1, "Python pickle"),
        ("evil.onnx", 0, "Python pickle"),
        ("evil.pt2", 2, "Python pickle"),
    ],
)
def test_a_pickle_is_refused_and_never_run(name, protocol, says, marker, model_dir, load_untouched, audit):
    path = model_dir / name
    path.write_bytes(pickle.dumps(Touch(marker), protocol=protocol))

    with audit() as log:
        expect_refusal(load_untouched, path, PickleRefusedError, f"'{name}'", says)

    assert not marker.exists()
    assert log.unpickled == []
    assert log.processes == []


def test_a_torch_checkpoint_is_refused(model_dir, load_untouched, audit):
    import torch

    state = torch.nn.Conv2d(3, 4, 3).state_dict()
    zipped, legacy, renamed = model_dir / "weights.pt", model_dir / "legacy.pth", model_dir / "weights.onnx"
    torch.save(state, zipped)
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    torch.save(state, renamed)
    assert zipfile.is_zipfile(zipped) and not zipfile.is_zipfile(legacy)

    with audit() as log:
        for path in (zipped, legacy, renamed):
            expect_refusal(load_untouched, path, PickleRefusedError, f"'{path.name}'", "checkpoint")

    assert log.unpickled == []


# ---------------------------------------------------------------------------------------------------
# External data stays inside the model's folder

OUTSIDE_VALUE = 1234.5  # what a tensor would hold if the loader read the outside file


@pytest.fixture
def outside_file(tmp_path: Path) -> Path:
    """A file beside (not inside) the model folder, the right size for the tensor `w`."""
    path = tmp_path / "outside.bin"
    path.write_bytes(np.full(4, OUTSIDE_VALUE, dtype=np.float32).tobytes())
    return path


def external_model(small_model, location: str, **entries) -> onnx.ModelProto:
    """y = x + w with w [1, 4] float stored externally at `location` (offset/length as given)."""
    weight = float_weight()
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in {"location": location, **entries}.items():
        entry = weight.external_data.add()
        entry.key, entry.value = key, str(value)
    return add_weight_model(small_model, weight)


def test_external_data_beside_the_model_is_read(
    small_model, save_onnx, model_dir, outside_file, load_untouched, audit
):
    (model_dir / "weights.bin").write_bytes(outside_file.read_bytes())
    path = save_onnx(external_model(small_model, "weights.bin"))

    with audit() as log:
        loaded = load_untouched(path)

    assert str((model_dir / "weights.bin").resolve()) in log.opened  # the audit log sees reads
    np.testing.assert_array_equal(
        numpy_helper.to_array(loaded.model.graph.initializer[0]), [[OUTSIDE_VALUE] * 4]
    )


def _link_file(model_dir: Path, outside: Path) -> str:
    (model_dir / "weights.bin").symlink_to(outside)
    return "weights.bin"


def _link_folder(model_dir: Path, outside: Path) -> str:
    elsewhere = outside.parent / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "weights.bin").write_bytes(outside.read_bytes())
    (model_dir / "data").symlink_to(elsewhere, target_is_directory=True)
    return "data/weights.bin"


@pytest.mark.parametrize(
    ("make_location", "says"),
    [
        (lambda folder, outside: "../outside.bin", "outside the model's folder"),
        (lambda folder, outside: "sub/../../outside.bin", "outside the model's folder"),
        (lambda folder, outside: str(outside), "outside the model's folder"),
        (_link_file, "symbolic link"),
        (_link_folder, "symbolic link"),
    ],
    ids=["parent", "sub-parent", "absolute", "symlinked-file", "symlinked-folder"],
)
def test_external_data_outside_the_folder_is_refused_and_never_read(
    make_location, says, small_model, save_onnx, model_dir, outside_file, load_untouched, audit
):
    location = make_location(model_dir, outside_file)
    path = save_onnx(external_model(small_model, location))

    with audit() as log:
        expect_refusal(load_untouched, path, ModelLoadError, "'w'", says)

    outside = {
        str(outside_file.resolve()),
        str((outside_file.parent / "elsewhere" / "weights.bin").resolve()),
    }
    assert not outside & set(log.opened), log.opened


def test_missing_external_data_file(small_model, save_onnx, load_untouched):
    path = save_onnx(external_model(small_model, "weights.bin"))

    expect_refusal(load_untouched, path, ModelLoadError, "'weights.bin'", "'w'", "missing")


def test_external_data_naming_no_file(small_model, save_onnx, load_untouched):
    path = save_onnx(external_model(small_model, ""))

    expect_refusal(load_untouched, path, ModelLoadError, "'w'", "names no file")


@pytest.mark.parametrize(
    ("file_bytes", "entries", "says"),
    [
        (16, {"offset": 0, "length": 32}, "wants bytes 0..32 of 'weights.bin', which has only 16 bytes"),
        (16, {"offset": 8, "length": 16}, "wants bytes 8..24"),
        (16, {"offset": 16}, "wants bytes 16..32"),
        (8, {}, "wants bytes 0..16 of 'weights.bin', which has only 8 bytes"),
        (16, {"offset": 10**15, "length": 16}, "which has only 16 bytes"),
        (64, {"offset": 0, "length": 32}, "(16 bytes) but its external data holds 32 bytes"),
    ],
    ids=["length", "offset+length", "offset", "short-file", "huge-offset", "length-vs-dims"],
)
def test_external_data_range_past_the_file_or_disagreeing(
    file_bytes, entries, says, small_model, save_onnx, model_dir, load_untouched
):
    (model_dir / "weights.bin").write_bytes(b"\x01" * file_bytes)
    path = save_onnx(external_model(small_model, "weights.bin", **entries))

    expect_refusal(load_untouched, path, ModelLoadError, "'w'", says)


def test_external_data_with_an_unreadable_offset(small_model, save_onnx, model_dir, load_untouched):
    (model_dir / "weights.bin").write_bytes(b"\x01" * 16)
    model = external_model(small_model, "weights.bin")
    entry = model.graph.initializer[0].external_data.add()
    entry.key, entry.value = "offset", "eight"
    path = save_onnx(model)

    expect_refusal(load_untouched, path, ModelLoadError, "'w'", "unreadable external data offset")


# ---------------------------------------------------------------------------------------------------
# Sizes a file only claims are refused before anything is allocated


class _AllocationWatch:
    """Peak traced memory and growth of the process's maximum resident size while the block runs."""

    def __enter__(self):
        self.rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        self.started = time.perf_counter()
        tracemalloc.start()
        return self

    def __exit__(self, *exc):
        _, self.peak_bytes = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        self.seconds = time.perf_counter() - self.started
        self.rss_growth_bytes = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.rss_before) * 1024
        return False

    def assert_small(self):
        assert self.seconds < 2.0, self.seconds
        assert self.peak_bytes < 50 * 2**20, self.peak_bytes
        assert self.rss_growth_bytes < 200 * 2**20, self.rss_growth_bytes


@pytest.fixture
def evaluations(monkeypatch) -> list[list[str]]:
    """Ops the loader hands to onnx's reference evaluator (which would allocate their outputs); the
    evaluator is replaced by one that computes nothing, so a test can never allocate for real."""
    seen: list[list[str]] = []

    class NoEvaluation:
        def __init__(self, model, *args, **kwargs):
            seen.append([node.op_type for node in model.graph.node])

        def run(self, *args, **kwargs):
            raise RuntimeError("tests never evaluate what a hostile file asks for")

    monkeypatch.setattr(onnx.reference, "ReferenceEvaluator", NoEvaluation)
    return seen


HUGE = 10**6  # 10^6 x 10^6 = 10^12 elements


@pytest.mark.parametrize("where", ["initializer", "constant-node"])
def test_a_tensor_claiming_10_to_the_12_elements(where, small_model, save_onnx, load_untouched):
    claim = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[HUGE, HUGE])
    if where == "initializer":
        model = add_weight_model(small_model, claim)
    else:
        nodes = [
            helper.make_node("Constant", [], ["w"], value=claim),
            helper.make_node("Add", ["x", "w"], ["y"]),
        ]
        model = small_model(nodes)
    path = save_onnx(model)

    with _AllocationWatch() as watch:
        expect_refusal(load_untouched, path, ModelLoadError, "'w'", str([HUGE, HUGE]), "GiB")
    watch.assert_small()


def test_a_negative_dimension(small_model, save_onnx, load_untouched):
    path = save_onnx(
        add_weight_model(small_model, TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[-1, 4]))
    )

    expect_refusal(load_untouched, path, ModelLoadError, "'w'", "negative dimension")


@pytest.mark.parametrize("where", ["initializer", "constant-node"])
def test_raw_data_length_disagreeing_with_dims(where, small_model, save_onnx, load_untouched):
    weight = float_weight()
    weight.raw_data = weight.raw_data[:12]
    if where == "initializer":
        model = add_weight_model(small_model, weight)
    else:
        nodes = [
            helper.make_node("Constant", [], ["w"], value=weight),
            helper.make_node("Add", ["x", "w"], ["y"]),
        ]
        model = small_model(nodes)
    path = save_onnx(model)

    expect_refusal(load_untouched, path, ModelLoadError, "'w'", "(16 bytes) but stores 12 bytes", "damaged")


def _int64(name: str, values) -> TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def _f32(name: str, shape) -> TensorProto:
    return numpy_helper.from_array(np.ones(shape, dtype=np.float32), name)


# (nodes computing "big", initializers): every one would allocate ~10^10 .. 10^12 elements
GUARDED_EXPANSIONS = {
    "ConstantOfShape": (
        [helper.make_node("ConstantOfShape", ["shape"], ["big"])],
        [_int64("shape", [HUGE, HUGE])],
    ),
    "ConstantOfShape-from-Constant": (
        [
            helper.make_node("Constant", [], ["shape"], value=_int64("shape", [HUGE, HUGE])),
            helper.make_node("ConstantOfShape", ["shape"], ["big"]),
        ],
        [],
    ),
    "Expand": (
        [helper.make_node("Expand", ["one", "shape"], ["big"])],
        [_f32("one", [1, 1]), _int64("shape", [HUGE, HUGE])],
    ),
    "Tile": (
        [helper.make_node("Tile", ["one", "reps"], ["big"])],
        [_f32("one", [1, 1]), _int64("reps", [HUGE, HUGE])],
    ),
    "Range": (
        [helper.make_node("Range", ["start", "limit", "delta"], ["big"])],
        [_f32("start", []), numpy_helper.from_array(np.array(1e12, np.float32), "limit"), _f32("delta", [])],
    ),
}


@pytest.mark.parametrize("case", list(GUARDED_EXPANSIONS))
def test_a_computed_constant_asking_for_10_to_the_12_elements(
    case, small_model, save_onnx, load_untouched, evaluations
):
    nodes, initializers = GUARDED_EXPANSIONS[case]
    model = small_model([*nodes, helper.make_node("Add", ["x", "big"], ["y"], name="use")], initializers)
    path = save_onnx(model)

    with _AllocationWatch() as watch:
        expect_refusal(
            load_untouched, path, ModelLoadError, "would create a constant of", "elements", "hostile"
        )
    watch.assert_small()
    assert evaluations == []  # refused from the estimate, before any evaluation


N = 100_000  # two 400 KB weights whose broadcast is 10^10 elements (40 GB float32)

UNGUARDED_EXPANSIONS = {
    "Expand-both-ways": (
        [helper.make_node("Expand", ["col", "row_shape"], ["big"])],
        [_f32("col", [N, 1]), _int64("row_shape", [1, N])],
    ),
    "Mul-broadcast": (
        [helper.make_node("Mul", ["col", "row"], ["big"])],
        [_f32("col", [N, 1]), _f32("row", [1, N])],
    ),
    "Gemm-outer-product": (
        [helper.make_node("Gemm", ["col", "row"], ["big"])],
        [_f32("col", [N, 1]), _f32("row", [1, N])],
    ),
    "MatMul-batch-broadcast": (
        [helper.make_node("MatMul", ["a", "b"], ["big"])],
        [_f32("a", [1, N, 1]), _f32("b", [N, 1, 1])],
    ),
}


@pytest.mark.parametrize("case", list(UNGUARDED_EXPANSIONS))
def test_a_broadcast_constant_asking_for_10_to_the_10_elements(
    case, small_model, save_onnx, load_untouched, evaluations
):
    nodes, initializers = UNGUARDED_EXPANSIONS[case]
    model = small_model([*nodes, helper.make_node("Add", ["x", "big"], ["y"], name="use")], initializers)
    path = save_onnx(model)

    expect_refusal(load_untouched, path, ModelLoadError, "would create a constant of", "elements")
    assert evaluations == []


# ---------------------------------------------------------------------------------------------------
# Tensors whose stored values are damaged in ways other than raw_data's length


@pytest.mark.parametrize(
    "weight",
    [
        TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1, 4], float_data=[1.0, 2.0, 3.0]),
        TensorProto(name="w", data_type=TensorProto.INT64, dims=[1, 4], int64_data=[1, 2, 3, 4, 5]),
        TensorProto(name="w", data_type=TensorProto.UNDEFINED, dims=[1, 4], raw_data=b"\x00" * 4),
    ],
    ids=["float_data-too-short", "int64_data-too-long", "undefined-data-type"],
)
def test_typed_data_disagreeing_with_dims_or_type(weight, small_model, save_onnx, load_untouched):
    path = save_onnx(add_weight_model(small_model, weight))

    expect_refusal(load_untouched, path, ModelLoadError, "'w'")


def _folded_into_add(small_model, weight: TensorProto) -> onnx.ModelProto:
    """w is reshaped (a foldable node) before y = x + w."""
    nodes = [
        helper.make_node("Reshape", [weight.name, "shape"], ["w2"], name="reshape"),
        helper.make_node("Add", ["x", "w2"], ["y"], name="add"),
    ]
    return small_model(nodes, [weight, _int64("shape", [1, 4])])


@pytest.mark.parametrize(
    "weight",
    [
        TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1, 4], float_data=[1.0, 2.0, 3.0]),
        TensorProto(name="w", data_type=TensorProto.UNDEFINED, dims=[1, 4], raw_data=b"\x00" * 4),
    ],
    ids=["float_data-too-short", "undefined-data-type"],
)
def test_a_damaged_tensor_read_by_a_foldable_node(weight, small_model, save_onnx, load_untouched):
    path = save_onnx(_folded_into_add(small_model, weight))

    expect_refusal(load_untouched, path, ModelLoadError, "'w'")


@pytest.mark.parametrize("attribute", ["none", "empty-value", "misnamed-value"])
def test_a_constant_node_without_a_value(attribute, small_model, save_onnx, load_untouched):
    constant = helper.make_node("Constant", [], ["c"], name="c")
    if attribute == "empty-value":
        constant.attribute.append(helper.make_attribute("value", TensorProto()))
    elif attribute == "misnamed-value":  # one flipped byte in 'value', as a damaged download has
        constant.attribute.append(helper.make_attribute("vaLue", float_weight(name="c")))
    path = save_onnx(small_model([constant, helper.make_node("Add", ["x", "c"], ["y"])]))

    expect_refusal(load_untouched, path, ModelLoadError, "'c'")


# ---------------------------------------------------------------------------------------------------
# Versions and operators onnxruntime cannot run, and incomplete graphs


def _identity(small_model, **kwargs) -> onnx.ModelProto:
    return small_model([helper.make_node("Identity", ["x"], ["y"])], **kwargs)


def test_opset_999(small_model, save_onnx, load_untouched):
    path = save_onnx(_identity(small_model, opset=999))

    message = expect_refusal(
        load_untouched, path, ModelLoadError, "opset 999", "installed onnxruntime supports up to"
    )
    limit = int(message.rsplit("opset", 1)[1].strip(" ."))
    assert 21 <= limit < 999


def test_ir_version_999(small_model, save_onnx, load_untouched):
    path = save_onnx(_identity(small_model, ir_version=999))

    message = expect_refusal(
        load_untouched, path, ModelLoadError, "IR version 999", "installed onnxruntime supports up to"
    )
    limit = int(message.rsplit(" ", 1)[1].strip("."))
    assert 10 <= limit < 999


def test_an_operator_domain_from_a_custom_library(small_model, save_onnx, load_untouched):
    model = small_model([helper.make_node("Steal", ["x"], ["y"], domain="evil.ops")])
    model.opset_import.append(helper.make_opsetid("evil.ops", 1))
    path = save_onnx(model)

    expect_refusal(load_untouched, path, ModelLoadError, "'evil.ops'", "custom-operator library")


def test_an_operator_domain_the_model_never_imports(small_model, save_onnx, load_untouched):
    path = save_onnx(small_model([helper.make_node("Steal", ["x"], ["y"], name="steal", domain="evil.ops")]))

    expect_refusal(load_untouched, path, ModelLoadError, "'steal'", "'evil.ops'", "never imports")


def test_an_unknown_operator_in_the_default_domain(small_model, save_onnx, load_untouched):
    path = save_onnx(small_model([helper.make_node("NotAnOperator", ["x"], ["y"], name="mystery")]))

    expect_refusal(
        load_untouched, path, ModelLoadError, "'mystery'", "'NotAnOperator'", "not an ONNX operator"
    )


def test_an_operator_newer_than_the_declared_opset(small_model, save_onnx, load_untouched):
    path = save_onnx(small_model([helper.make_node("Gelu", ["x"], ["y"])], opset=13))

    expect_refusal(load_untouched, path, ModelLoadError, "'Gelu'", "opset 13")


def test_a_node_reading_a_value_nothing_produces(small_model, save_onnx, load_untouched):
    path = save_onnx(small_model([helper.make_node("Add", ["x", "ghost"], ["y"], name="add")]))

    expect_refusal(
        load_untouched, path, ModelLoadError, "'add' reads 'ghost'", "nothing in the model produces"
    )


def test_an_output_nothing_produces(small_model, save_onnx, load_untouched):
    path = save_onnx(small_model([helper.make_node("Relu", ["x"], ["y"])], outputs=["y", "z"]))

    expect_refusal(load_untouched, path, ModelLoadError, "'z' is produced by no node")


def test_a_subgraph_reading_a_value_nothing_produces(small_model, save_onnx, load_untouched):
    branch = helper.make_graph(
        [helper.make_node("Neg", ["phantom"], ["b"])],
        "branch",
        [],
        [helper.make_tensor_value_info("b", TensorProto.FLOAT, None)],
    )
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        helper.make_node("Cast", ["s"], ["cond"], to=TensorProto.BOOL),
        helper.make_node("If", ["cond"], ["y"], name="choose", then_branch=branch, else_branch=branch),
    ]
    path = save_onnx(small_model(nodes))

    expect_refusal(load_untouched, path, ModelLoadError, "reads 'phantom'")


def test_an_operator_name_that_is_not_utf8(small_model, save_onnx, load_untouched):
    path = save_onnx(small_model([helper.make_node("Relu", ["x"], ["y"], name="act")]))
    data = path.read_bytes()
    assert data.count(b"Relu") == 1
    path.write_bytes(data.replace(b"Relu", b"R\xfflu"))  # one damaged byte

    expect_refusal(load_untouched, path, ModelLoadError)


# ---------------------------------------------------------------------------------------------------
# Cases a bit-flip fuzzer found (each crashed an earlier version instead of raising ModelLoadError)


def test_a_graph_name_that_is_not_utf8(small_model, save_onnx, load_untouched):
    model = small_model([helper.make_node("Relu", ["x"], ["y"], name="act")])
    model.graph.name = "graphname"
    path = save_onnx(model)
    path.write_bytes(path.read_bytes().replace(b"graphname", b"\x81raphname"))

    expect_refusal(load_untouched, path, ModelLoadError)


def test_a_tensor_with_more_dimensions_than_any_weight_has(small_model, save_onnx, load_untouched):
    weight = numpy_helper.from_array(np.ones([1] * 40, np.float32), "w")
    model = small_model([helper.make_node("Add", ["x", "w"], ["y"])], initializers=[weight])
    path = save_onnx(model)

    expect_refusal(load_untouched, path, ModelLoadError)


def test_a_conv_group_attribute_of_the_wrong_type_is_not_a_crash(conv_net, save_onnx, load_untouched):
    from slimscope.core.inspection import iter_inspect
    from slimscope.core.tasks import run_sync

    model = conv_net.model
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    conv.attribute.append(helper.make_attribute("group", "one"))  # a string where an int belongs
    path = save_onnx(model)

    try:
        loaded = load_untouched(path)
    except ModelLoadError:
        return  # refusing it is fine too
    report = run_sync(iter_inspect(loaded))
    assert any(layer.op_type == "Conv" for layer in report.layers)
