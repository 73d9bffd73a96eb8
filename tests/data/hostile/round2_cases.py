"""The second hostile round's cases that build_corpus.py writes (issue 13, "messages a user understands").

Two kinds:
- `model_cases`: more model files the loader must refuse in one sentence (they join build_corpus.CASES and
  so every check tests/core/test_hostile_corpus.py makes: one line, nothing opened outside, no library
  loaded, the same message in the worker process).
- `COMMAND_CASES`: whole `slimscope` commands on the files in `round2/` (models that load but must not be
  optimized, data and recipes that must be refused, names holding line breaks and terminal escapes, and
  commands that must now succeed). tests/core/test_hostile_round2_messages.py runs each one as a real
  process: a refusal is exactly one line on stderr and exit code 2; a success prints nothing on stderr.

Names with line breaks or escapes are not committed (git and other systems handle them badly): a case
lists them in `copies`, made in the test's copy of `round2/`.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROUND2 = "round2"  # the folder, inside the corpus, of the files the command cases use
Builder = Callable[[], onnx.ModelProto]


# ---------------------------------------------------------------------------------------------------
# Models the loader refuses (added to build_corpus.CASES)


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def _replace_weight(model: onnx.ModelProto, tensor: TensorProto) -> None:
    old = next(t for t in model.graph.initializer if t.name == tensor.name)
    model.graph.initializer.remove(old)
    model.graph.initializer.append(tensor)


def _call_function(model: onnx.ModelProto, body: list[onnx.NodeProto], imports: list[str]) -> None:
    """Relu becomes a call of the local function local.fn::Act with this body."""
    opsets = [helper.make_opsetid(domain, 13 if domain == "" else 1) for domain in imports]
    model.functions.append(helper.make_function("local.fn", "Act", ["x"], ["y"], body, opsets))
    relu = _node(model, "relu")
    relu.op_type, relu.domain = "Act", "local.fn"
    model.opset_import.append(helper.make_opsetid("local.fn", 1))


def _recursive_function(model: onnx.ModelProto) -> None:
    _call_function(model, [helper.make_node("Act", ["x"], ["y"], domain="local.fn")], ["", "local.fn"])


def _function_with_unknown_operator(model: onnx.ModelProto) -> None:
    _call_function(model, [helper.make_node("Frobnicate", ["x"], ["y"], name="inside_act")], [""])


def _string_bias(model: onnx.ModelProto) -> None:
    _replace_weight(model, helper.make_tensor("fc.bias", TensorProto.STRING, [3], [b"a", b"b", b"c"]))


def _empty_weight(model: onnx.ModelProto) -> None:
    _replace_weight(model, numpy_helper.from_array(np.zeros((0, 72), np.float32), "fc.weight"))


def _conv_group(group: int) -> Callable[[onnx.ModelProto], None]:
    def edit(model: onnx.ModelProto) -> None:
        _node(model, "conv").attribute.append(helper.make_attribute("group", group))

    return edit


def _sparse_out_of_range(model: onnx.ModelProto) -> None:
    weight = next(t for t in model.graph.initializer if t.name == "fc.weight")
    model.graph.initializer.remove(weight)
    values = numpy_helper.from_array(np.array([0.5, -0.5], np.float32), "fc.weight")
    indices = numpy_helper.from_array(np.array([3, 100_000], np.int64), "fc.weight_indices")
    model.graph.sparse_initializer.append(helper.make_sparse_tensor(values, indices, [3, 72]))


# (file, case, error, fragment, edit of the base model)
MODEL_CASES = [
    ("local-function-recursive.onnx", "a model-local function that calls itself", "ModelLoadError", "local function 'Act' calls itself", _recursive_function),
    ("local-function-unknown-operator.onnx", "a model-local function whose body uses an operator that does not exist", "ModelLoadError", "uses the operator 'Frobnicate', which is not an ONNX operator", _function_with_unknown_operator),
    ("string-weight.onnx", "a Gemm bias stored as text (strings)", "ModelLoadError", "Weight 'fc.bias' of node 'fc' holds text (strings), which Gemm does not take", _string_bias),
    ("zero-sized-weight.onnx", "a Gemm weight of shape [0, 72]", "ModelLoadError", "has shape [0, 72], which holds no values", _empty_weight),
    ("conv-group-0.onnx", "a Conv with group=0", "ModelLoadError", "Conv 'conv' has group=0; it must be at least 1", _conv_group(0)),
    ("conv-group-3.onnx", "a Conv with 2 output channels in group=3 groups", "ModelLoadError", "into group=3 groups, which does not divide evenly", _conv_group(3)),
    ("conv-group-2.onnx", "a Conv with group=2 on a 1-channel input", "ModelLoadError", "receives 1 input channel, but its weight [2, 1, 3, 3] with group=2 takes 2", _conv_group(2)),
    ("sparse-weight-outside.onnx", "a sparse weight with an index outside its shape", "ModelLoadError", "Sparse weight 'fc.weight' has indices outside its shape", _sparse_out_of_range),
]  # fmt: skip


def model_cases(base: Builder) -> list[tuple[str, str, str, str, Callable[[], bytes]]]:
    def build(edit: Callable[[onnx.ModelProto], None]) -> Callable[[], bytes]:
        def model_bytes() -> bytes:
            model = base()
            edit(model)
            return model.SerializeToString()

        return model_bytes

    return [(file, case, error, fragment, build(edit)) for file, case, error, fragment, edit in MODEL_CASES]


# ---------------------------------------------------------------------------------------------------
# Files of the command cases (round2/)


def _with_weight_value(name: str, value: float) -> Callable[[onnx.ModelProto], None]:
    def edit(model: onnx.ModelProto) -> None:
        tensor = next(t for t in model.graph.initializer if t.name == name)
        array = numpy_helper.to_array(tensor).copy()
        array.flat[0] = value
        tensor.CopyFrom(numpy_helper.from_array(array, name))

    return edit


def _nan_gain(model: onnx.ModelProto) -> None:
    """relu → Mul by a constant holding a NaN → flatten: not a layer weight, so only calibration sees it."""
    _node(model, "flatten").input[0] = "scaled"
    gain = np.array([np.nan, 1.0], np.float32).reshape(1, 2, 1, 1)
    model.graph.initializer.append(numpy_helper.from_array(gain, "gain"))
    model.graph.node.insert(2, helper.make_node("Mul", ["r", "gain"], ["scaled"], name="gain_mul"))


def _conv_in_function(model: onnx.ModelProto) -> None:
    """Conv + Relu inside a local function: the layer lives in the function's body."""
    body = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    opsets = [helper.make_opsetid("", 13)]
    model.functions.append(helper.make_function("local.fn", "ConvRelu", ["x", "w", "b"], ["y"], body, opsets))
    call = helper.make_node(
        "ConvRelu", ["input", "conv.weight", "conv.bias"], ["r"], name="conv_relu", domain="local.fn"
    )
    nodes = [call, *[n for n in model.graph.node if n.name in ("flatten", "fc")]]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.opset_import.append(helper.make_opsetid("local.fn", 1))


def _weights_in_branches(model: onnx.ModelProto) -> None:
    """An If after the classifier whose two branches each multiply by a 3x3 weight of their own."""

    def branch(name: str, value: float) -> onnx.GraphProto:
        weight = numpy_helper.from_array(np.full((3, 3), value, np.float32), f"{name}.weight")
        out = helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [1, 3])
        matmul = helper.make_node("MatMul", ["logits", weight.name], [f"{name}_out"], name=f"{name}.matmul")
        return helper.make_graph([matmul], name, [], [out], [weight])

    model.graph.initializer.append(numpy_helper.from_array(np.array(True), "use_then"))
    choose = helper.make_node("If", ["use_then"], ["chosen"], name="choose",
                              then_branch=branch("then", 0.5), else_branch=branch("else", -0.5))  # fmt: skip
    model.graph.node.append(choose)
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("chosen", TensorProto.FLOAT, [1, 3]))


def _sparse_weight(model: onnx.ModelProto) -> None:
    weight = next(t for t in model.graph.initializer if t.name == "fc.weight")
    dense = numpy_helper.to_array(weight).copy()
    dense[:, ::2] = 0
    model.graph.initializer.remove(weight)
    index = np.flatnonzero(dense).astype(np.int64)
    values = numpy_helper.from_array(dense.reshape(-1)[index], "fc.weight")
    sparse = helper.make_sparse_tensor(values, numpy_helper.from_array(index, "fc.weight_indices"), [3, 72])
    model.graph.sparse_initializer.append(sparse)


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # fixed dates: the same bytes on every run
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _calibration() -> bytes:
    samples = np.random.default_rng(13).normal(size=(8, 1, 6, 6)).astype(np.float32)
    return _zip({"x.npy": _npy(samples)})


def _recipe(preprocess: str) -> Callable[[], bytes]:
    # Written as text: Infinity and NaN are what Python's json module reads, and what a user could type.
    text = '{"version": 1, "defaults": {"quantize": {}}, "data": {"preprocess": ' + preprocess + "}}\n"
    return lambda: text.encode()


def round2_files(base: Builder) -> dict[str, Callable[[], bytes]]:
    """Every file of round2/, by name, and how to build it (byte for byte the same on every run)."""

    def edited(edit: Callable[[onnx.ModelProto], None]) -> Callable[[], bytes]:
        def model_bytes() -> bytes:
            model = base()
            edit(model)
            return model.SerializeToString()

        return model_bytes

    return {
        "base.onnx": lambda: base().SerializeToString(),
        "nan-weight.onnx": edited(_with_weight_value("conv.weight", float("nan"))),
        "inf-bias.onnx": edited(_with_weight_value("fc.bias", float("-inf"))),
        "nan-constant.onnx": edited(_nan_gain),
        "local-function-conv.onnx": edited(_conv_in_function),
        "subgraph-weights.onnx": edited(_weights_in_branches),
        "sparse-weight.onnx": edited(_sparse_weight),
        "int8.json": lambda: b'{"version": 1, "defaults": {"quantize": {}}}\n',
        "preprocess-scale-infinity.json": _recipe('{"scale": Infinity}'),
        "preprocess-mean-nan.json": _recipe('{"mean": [NaN]}'),
        "preprocess-std-denormal.json": _recipe('{"std": [1e-320]}'),
        "calib.npz": _calibration,
        "text.npz": lambda: b"x,y\n0.1,0\n0.2,1\n",
        "random-bytes.npz": lambda: np.random.default_rng(8).bytes(4096),
        "array.npz": lambda: _npy(np.zeros((4, 1, 6, 6), np.float32)),  # np.save's output, named .npz
        "damaged.pt2": lambda: _zip(
            {"model/archive_format": b"pt2", "model/models/model.json": b"{not json"}
        ),
    }


# ---------------------------------------------------------------------------------------------------
# The commands


@dataclass(frozen=True)
class CommandCase:
    name: str
    case: str  # what it covers, in words
    argv: tuple[str, ...]  # {dir}: the copy of round2/; {out}: an empty folder; {demo}: resources/demo
    exit_code: int  # 2: refused in one line on stderr; 0: succeeds, nothing on stderr
    fragment: str  # in the stderr line (refusal) or in a line of stdout (success)
    # (name made in the test's copy, the round2 file it copies, or "" for an empty folder)
    copies: tuple[tuple[str, str], ...] = ()


_OPTIMIZE = (
    "optimize",
    "{dir}/base.onnx",
    "--recipe",
    "{dir}/int8.json",
    "-o",
    "{out}/o.onnx",
    "--no-latency",
)
_LINE_BREAK_DATA = "calib\nslimscope: the data is fine.npz"
_ESCAPE_FOLDER = "images\x1b[2J"
_LONG_NAME = "a" * 245 + ".onnx"  # 250 bytes: legal on every Linux file system


def _optimize(model: str, *extra: str) -> tuple[str, ...]:
    return ("optimize", f"{{dir}}/{model}", "--recipe", "{dir}/int8.json", "-o", "{out}/o.onnx",
            "--calib", "{dir}/calib.npz", "--no-latency", *extra)  # fmt: skip


def _with_recipe(recipe: str) -> tuple[str, ...]:
    return (*_OPTIMIZE[:3], f"{{dir}}/{recipe}", *_OPTIMIZE[4:], "--calib", "{dir}/calib.npz")


def _with_calib(data: str) -> tuple[str, ...]:
    return (*_OPTIMIZE, "--calib", f"{{dir}}/{data}")


COMMAND_CASES = [
    CommandCase("nan-weight", "a Conv weight holding a NaN, optimized", _optimize("nan-weight.onnx"), 2, "Weight 'conv.weight' of layer 'conv' has 1 NaN (not-a-number) value among its 18"),
    CommandCase("inf-bias", "a Gemm bias holding -Infinity, optimized", _optimize("inf-bias.onnx"), 2, "Weight 'fc.bias' of layer 'fc' has 1 infinite value among its 3"),
    CommandCase("nan-constant", "a NaN in a constant that is no layer weight, optimized", _optimize("nan-constant.onnx"), 2, "takes NaN or infinite values on the calibration data"),
    CommandCase("preprocess-scale-infinity", "a recipe whose preprocessing scale is Infinity", _with_recipe("preprocess-scale-infinity.json"), 2, "Recipe field 'data.preprocess.scale': must hold finite numbers, got Infinity."),
    CommandCase("preprocess-mean-nan", "a recipe whose preprocessing mean is NaN", _with_recipe("preprocess-mean-nan.json"), 2, "Recipe field 'data.preprocess.mean': must hold finite numbers, got [NaN]."),
    CommandCase("preprocess-std-denormal", "a recipe whose preprocessing std is 1e-320 (a denormal)", _with_recipe("preprocess-std-denormal.json"), 2, "Recipe field 'data.preprocess.std': must be at least 1.2e-38"),
    CommandCase("text-npz", "a text file named .npz as calibration data", _with_calib("text.npz"), 2, "'text.npz' is not a NumPy .npz archive"),
    CommandCase("random-npz", "4 KiB of random bytes named .npz", _with_calib("random-bytes.npz"), 2, "'random-bytes.npz' is not a NumPy .npz archive"),
    CommandCase("npy-as-npz", "a single .npy array named .npz", _with_calib("array.npz"), 2, "'array.npz' is a single NumPy array (.npy), not a NumPy .npz archive"),
    CommandCase("pt2-trusted", "a damaged .pt2 opened with --trust (torch's own error says 'check the warnings above')", ("inspect", "{dir}/damaged.pt2", "--trust"), 2, "'damaged.pt2' cannot be read as a torch.export program (.pt2)"),
    CommandCase("evaluate-untrusted", "`evaluate` on a .pt2: the --trust it suggests, evaluate takes", ("evaluate", "{dir}/base.onnx", "{dir}/damaged.pt2", "--data", "{dir}/calib.npz", "--no-latency"), 2, "open it only if you trust where it came from (--trust on the command line)"),
    CommandCase("line-break-in-data-name", "calibration data whose name holds a line break", _with_calib(_LINE_BREAK_DATA), 2, "'calib\\nslimscope: the data is fine.npz' is not a NumPy .npz archive", ((_LINE_BREAK_DATA, "text.npz"),)),
    CommandCase("escape-in-folder-name", "an image folder whose name holds a terminal escape", _with_calib(_ESCAPE_FOLDER), 2, "images\\x1b[2J' holds no images", ((_ESCAPE_FOLDER, ""),)),
    CommandCase("local-function-conv", "a Conv inside a model-local function, optimized (was 'unexpected KeyError')", _optimize("local-function-conv.onnx"), 0, "wrote "),
    CommandCase("subgraph-weights", "weights inside an If node's branches, optimized", _optimize("subgraph-weights.onnx"), 0, "WARNING: 2 weights inside If/Loop/Scan subgraphs are left as they are"),
    CommandCase("sparse-weight", "a Gemm weight stored as a sparse tensor, inspected", ("inspect", "{dir}/sparse-weight.onnx"), 0, "note: Stored 1 sparse weight densely, so that it can be shown and optimized."),
    CommandCase("long-output-name", "an output name of 250 bytes (the temporary name was longer)", (*_OPTIMIZE[:5], "{out}/" + _LONG_NAME, "--calib", "{dir}/calib.npz", "--no-latency"), 0, "wrote "),
    CommandCase("line-break-in-output-name", "an output name holding a line break", (*_OPTIMIZE[:5], "{out}/o\nslimscope: done.onnx", "--calib", "{dir}/calib.npz", "--no-latency"), 0, "o\\nslimscope: done.onnx"),
    CommandCase("demo-int8", "the demo quantized to int8 and evaluated: nothing but the report", ("optimize", "{demo}/digits_net.onnx", "--recipe", "{dir}/int8.json", "-o", "{out}/o.onnx", "--calib", "{demo}/digits_calib.npz", "--eval", "{demo}/digits_test.npz", "--no-latency", "--report", "{out}/report.json"), 0, "top-1 agreement"),
    CommandCase("demo-evaluate", "the demo evaluated against itself", ("evaluate", "{demo}/digits_net.onnx", "{demo}/digits_net.onnx", "--data", "{demo}/digits_test.npz", "--no-latency"), 0, "top-1 agreement: 100.0%"),
]  # fmt: skip


def prepare_copy(round2: Path, target: Path) -> Path:
    """A copy of round2/ at `target`, with every case's specially named copies made in it."""
    target.mkdir(parents=True)
    for file in round2.iterdir():
        (target / file.name).write_bytes(file.read_bytes())
    for case in COMMAND_CASES:
        for name, source in case.copies:
            if source:
                (target / name).write_bytes((round2 / source).read_bytes())
            else:
                (target / name).mkdir(exist_ok=True)
    return target


def command_line(case: CommandCase, folder: Path, out: Path, demo: Path) -> list[str]:
    places = {"{dir}": str(folder), "{out}": str(out), "{demo}": str(demo)}
    argv = []
    for arg in case.argv:
        for key, value in places.items():
            arg = arg.replace(key, value)
        argv.append(arg)
    return argv


def run_command(argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`slimscope ARGV` as its console script runs it, in a real process, stdout and stderr apart."""
    code = "import sys; from slimscope.core.cli import main; sys.exit(main())"
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=timeout, env=env
    )


def shown_line(case: CommandCase, result: subprocess.CompletedProcess) -> str:
    """What the user sees of this case: the refusal's line, or the stdout line holding the fragment."""
    if case.exit_code:
        return result.stderr.strip()
    return next((line for line in result.stdout.splitlines() if case.fragment in line), "")


# ---------------------------------------------------------------------------------------------------
# What the docs show (docs/hostile_files.md, written by build_corpus.py)

COMMAND_HEADER = ["| case | command | exit | what the user sees |", "| --- | --- | --- | --- |"]
OTHER_TEST_FILES = ("tests/core/test_hostile_round2_files.py", "tests/core/test_hostile_round2_bounds.py")


def command_row(case: CommandCase, result: subprocess.CompletedProcess, places: dict[str, str]) -> str:
    """The docs row of a case run with the folders `places` maps to their placeholders."""

    def placed(text: str) -> str:
        for path, placeholder in places.items():
            text = text.replace(path, placeholder)
        return text.replace(_LONG_NAME, "{a × 245}.onnx")

    from slimscope.core.errors import one_line

    command = "slimscope " + " ".join(one_line(arg) for arg in case.argv)
    cells = [case.case, f"`{placed(command)}`", str(result.returncode), placed(shown_line(case, result))]
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def run_command_cases(round2: Path, scratch: Path, demo: Path) -> tuple[list[str], dict[str, int]]:
    """Every command case run for real: its docs row, and the totals (refused, succeeded, failed)."""
    folder = prepare_copy(round2, scratch / "round2")
    rows, totals = [], {"refused in one line": 0, "succeeded quietly": 0, "not as expected": 0}
    for case in COMMAND_CASES:
        out = scratch / f"out-{case.name}"
        out.mkdir()
        result = run_command(command_line(case, folder, out, demo))
        places = {str(folder): "{dir}", str(out): "{out}", str(demo): "{demo}"}
        rows.append(command_row(case, result, places))
        problem = command_problem(case, result)
        key = (
            "not as expected" if problem else "refused in one line" if case.exit_code else "succeeded quietly"
        )
        totals[key] += 1
        if problem:
            print(f"{case.name}: {problem}", file=sys.stderr)
    return rows, totals


def command_problem(case: CommandCase, result: subprocess.CompletedProcess) -> str | None:
    """What is wrong with a case's run, or None: the exit code, one line on stderr or none, the fragment."""
    if result.returncode != case.exit_code:
        return f"exit code {result.returncode}, expected {case.exit_code}: {result.stderr[-500:]!r}"
    if case.exit_code:
        lines = result.stderr.splitlines()
        if len(lines) != 1 or not lines[0].startswith("slimscope: error: "):
            return f"stderr is not one error line: {result.stderr[-1000:]!r}"
        if case.fragment not in lines[0]:
            return f"{case.fragment!r} not in {lines[0]!r}"
        return None
    if result.stderr:
        return f"stray lines on stderr: {result.stderr[-1000:]!r}"
    if not shown_line(case, result):
        return f"{case.fragment!r} not in stdout: {result.stdout[-1000:]!r}"
    return None


def other_round2_tests(root: Path) -> list[str]:
    """The round-2 cases the other test files hold: each test's name and the first line of its docstring."""
    import ast

    lines = []
    for relative in OTHER_TEST_FILES:
        path = root / relative
        lines += ["", f"`{relative}`:", ""]
        if not path.is_file():
            lines.append("- (not written yet)")
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_"):
                doc = (ast.get_docstring(node) or "").strip().split("\n\n")[0]  # its first paragraph
                words = node.name.removeprefix("test_").replace("_", " ")
                lines.append(f"- {words}" + (f": {' '.join(doc.split())}" if doc else ""))
    return lines
