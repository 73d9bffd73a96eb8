#!/usr/bin/env python3
"""Build the hostile-file corpus: files Slimscope must refuse with one sentence, and nothing else.

    python tests/data/hostile/build_corpus.py           # rewrite the corpus, manifest.json and the docs
    python tests/data/hostile/build_corpus.py --check   # only say whether they are up to date (exit 1 if not)

Every corpus file is built here from code, byte for byte the same on every run, so the committed files can
be checked against this script (tests/core/test_hostile_corpus.py does). `manifest.json` maps each file to
the case it covers, the error class and a fragment its message must contain. docs/hostile_files.md shows the
message each file really gives: it is made by loading the files (from a temporary copy, so that the paths in
messages can be written as `<model folder>`), never typed by hand. Its second table, the PyTorch formats that
can run code, is built the same way from files made with torch in a temporary folder (they are not committed:
torch decides their bytes). The second hostile round (round2_cases.py) adds model files to the corpus, and
`round2/`: files for whole commands, each run as a real process; the run prints the totals.
"""

from __future__ import annotations

import argparse
import filecmp
import io
import json
import os
import pickle
import random
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # round2_cases.py beside this script (not a package)
import round2_cases  # noqa: E402

DOCS = HERE.parents[2] / "docs" / "hostile_files.md"
MANIFEST = "manifest.json"
EXTERNAL = "external"  # the external-data cases' models live here, so the corpus root is outside their folder
OUTSIDE_FILE = "outside-secret.bin"  # what escaping external data would read; never opened
SYMLINK = f"{EXTERNAL}/link-to-secret.bin"  # -> ../outside-secret.bin
ABSOLUTE_TARGET = "/etc/hostname"
GENERATED = (MANIFEST, OUTSIDE_FILE, SYMLINK)  # written by this script besides the cases' files

# Every payload runs `touch "$SLIMSCOPE_PAYLOAD_MARKER"` when unpickled: a test sets the variable to a path
# of its own and checks that the file never appears (unset, the command fails and does nothing).
PAYLOAD_ENV = "SLIMSCOPE_PAYLOAD_MARKER"
PAYLOAD_COMMAND = f'touch "${PAYLOAD_ENV}"'


class SystemPayload:
    """Unpickling this runs a shell command through os.system: the stand-in for any code a pickle can run."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


# ---------------------------------------------------------------------------------------------------
# The valid model every damaged one starts from: Conv(1→2, 3x3) + Relu + Flatten + Gemm(72→3)


def base_model(opset: int = 13, ir_version: int = 8) -> onnx.ModelProto:
    weights = {
        "conv.weight": np.linspace(-1, 1, 18, dtype=np.float32).reshape(2, 1, 3, 3),
        "conv.bias": np.array([0.1, -0.1], dtype=np.float32),
        "fc.weight": np.linspace(-0.5, 0.5, 3 * 72, dtype=np.float32).reshape(3, 72),
        "fc.bias": np.array([0.0, 0.5, -0.5], dtype=np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["input", "conv.weight", "conv.bias"], ["c"], name="conv", pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "hostile_base",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 6, 6])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])],
        [numpy_helper.from_array(value, name) for name, value in weights.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)


def quantize_conv_weight(model: onnx.ModelProto, scales: list[float], zero_points: list[int]) -> None:
    """Store conv.weight as int8 with a DequantizeLinear along its output channels (axis 0), as QDQ models do;
    with 2 scales and 2 zero points (or 1 and 1) the model is valid."""
    weight = next(t for t in model.graph.initializer if t.name == "conv.weight")
    model.graph.initializer.remove(weight)
    model.graph.initializer.extend(
        [
            numpy_helper.from_array((np.arange(18, dtype=np.int8) - 9).reshape(2, 1, 3, 3), "conv.weight_q"),
            numpy_helper.from_array(np.array(scales, np.float32), "conv.weight_scale"),
            numpy_helper.from_array(np.array(zero_points, np.int8), "conv.weight_zero"),
        ]
    )
    dequantize = helper.make_node(
        "DequantizeLinear", ["conv.weight_q", "conv.weight_scale", "conv.weight_zero"], ["conv.weight"],
        name="conv.weight_dq", axis=0,
    )  # fmt: skip
    model.graph.node.insert(0, dequantize)


def _edited(edit: Callable[[onnx.ModelProto], None], **base_args) -> Callable[[], bytes]:
    def build() -> bytes:
        model = base_model(**base_args)
        edit(model)
        return model.SerializeToString()

    return build


def _truncated(cut: Callable[[int], int]) -> Callable[[], bytes]:
    def build() -> bytes:
        whole = base_model().SerializeToString()
        return whole[: cut(len(whole))]

    return build


def _weight(model: onnx.ModelProto, name: str) -> TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


def _drop_weight(model: onnx.ModelProto) -> None:
    model.graph.initializer.remove(_weight(model, "fc.weight"))  # Gemm still reads it


def _cycle(model: onnx.ModelProto) -> None:
    relu = next(n for n in model.graph.node if n.name == "relu")
    relu.input[0] = "r_back"  # relu now waits for 'back', which waits for relu
    model.graph.node.append(helper.make_node("Neg", ["r"], ["r_back"], name="back"))


def _self_cycle(model: onnx.ModelProto) -> None:
    relu = next(n for n in model.graph.node if n.name == "relu")
    relu.input[0] = "r"  # relu reads its own output


def _defined_twice(model: onnx.ModelProto) -> None:
    model.graph.node.append(helper.make_node("Neg", ["c"], ["r"], name="second_r"))


def _duplicate_outputs(model: onnx.ModelProto) -> None:
    model.graph.output.append(model.graph.output[0])


def _claim_shape(dims: list[int]) -> Callable[[onnx.ModelProto], None]:
    def edit(model: onnx.ModelProto) -> None:
        weight = _weight(model, "fc.weight")
        weight.ClearField("raw_data")  # a shape with no data behind it
        del weight.dims[:]
        weight.dims.extend(dims)

    return edit


def _unknown_domain(model: onnx.ModelProto) -> None:
    relu = next(n for n in model.graph.node if n.name == "relu")
    relu.op_type, relu.domain = "Exfiltrate", "com.example.hostile"
    model.opset_import.append(helper.make_opsetid("com.example.hostile", 1))


def _line_break_in_a_name(model: onnx.ModelProto) -> None:
    """A damaged weight whose name would print a second, made-up line (found by tests/fuzz_loader.py)."""
    name = "fc.weight\nslimscope: the model is safe"
    weight = _weight(model, "fc.weight")
    weight.name, weight.raw_data = name, weight.raw_data[:-4]
    next(n for n in model.graph.node if n.name == "fc").input[1] = name


def _terminal_escape_in_a_name(model: onnx.ModelProto) -> None:
    """An unknown operator whose node name would clear the user's terminal (ESC [2J)."""
    relu = next(n for n in model.graph.node if n.name == "relu")
    relu.name, relu.op_type = "relu\x1b[2J", "NotAnOperator"


def _external_at(location: str) -> Callable[[onnx.ModelProto], None]:
    def edit(model: onnx.ModelProto) -> None:
        weight = _weight(model, "fc.weight")
        weight.ClearField("raw_data")
        weight.data_location = TensorProto.EXTERNAL
        entry = weight.external_data.add()
        entry.key, entry.value = "location", location

    return edit


def _zip_archive() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # fixed dates: the same bytes on every run
        archive.writestr(zipfile.ZipInfo("model/readme.txt", (2020, 1, 1, 0, 0, 0)), "not a model")
        archive.writestr(zipfile.ZipInfo("model/weights.bin", (2020, 1, 1, 0, 0, 0)), bytes(64))
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------
# The corpus


@dataclass(frozen=True)
class Case:
    file: str  # path inside the corpus folder
    case: str  # what it covers, in words
    error: str  # the SlimscopeError subclass expected
    fragment: str  # a part of the message that must not change
    build: Callable[[], bytes]


_BASE_SIZE = len(base_model().SerializeToString())
_WHOLE = "ModelLoadError"

CASES = [
    Case("truncated-at-1.onnx", "truncated to its first byte", _WHOLE, "not a readable ONNX model", _truncated(lambda n: 1)),
    Case("truncated-at-2.onnx", "truncated to 2 bytes (the IR version only)", _WHOLE, "holds no model graph", _truncated(lambda n: 2)),
    Case("truncated-at-quarter.onnx", f"truncated to a quarter ({_BASE_SIZE // 4} of {_BASE_SIZE} bytes)", _WHOLE, "not a readable ONNX model", _truncated(lambda n: n // 4)),
    Case("truncated-at-half.onnx", f"truncated to half ({_BASE_SIZE // 2} of {_BASE_SIZE} bytes)", _WHOLE, "not a readable ONNX model", _truncated(lambda n: n // 2)),
    Case("truncated-last-byte.onnx", "the last byte cut off", _WHOLE, "not a readable ONNX model", _truncated(lambda n: n - 1)),
    Case("empty.onnx", "an empty file", _WHOLE, "'empty.onnx' is empty", lambda: b""),
    Case("random-bytes.onnx", "4 KiB of random bytes", _WHOLE, "not a readable ONNX model", lambda: random.Random(8).randbytes(4096)),
    Case("zip-renamed.onnx", "a zip archive renamed .onnx", _WHOLE, "is a zip archive but not a PyTorch model format", _zip_archive),
    Case("pickle-renamed.onnx", "a pickle with an os.system payload renamed .onnx", "PickleRefusedError", "is a Python pickle", lambda: pickle.dumps(SystemPayload(PAYLOAD_COMMAND), protocol=4)),
    Case("missing-initializer.onnx", "a node input nothing produces (a weight missing)", _WHOLE, "reads 'fc.weight', which nothing in the model produces", _edited(_drop_weight)),
    Case("cycle.onnx", "a cycle: two nodes feeding each other", _WHOLE, "feed each other in a cycle", _edited(_cycle)),
    Case("self-cycle.onnx", "a node reading its own output", _WHOLE, "reads its own output", _edited(_self_cycle)),
    Case("value-defined-twice.onnx", "two nodes producing the same value", _WHOLE, "already defines elsewhere", _edited(_defined_twice)),
    Case("duplicate-outputs.onnx", "the graph output listed twice", _WHOLE, "lists its output 'logits' more than once", _edited(_duplicate_outputs)),
    Case("opset-999.onnx", "opset 999 (onnx's checker accepts it)", _WHOLE, "needs ONNX opset 999", lambda: base_model(opset=999).SerializeToString()),
    Case("ir-version-999.onnx", "IR version 999 (onnx's checker accepts it)", _WHOLE, "ONNX IR version 999", lambda: base_model(ir_version=999).SerializeToString()),
    Case("negative-dims.onnx", "a weight of shape [-1, 72] with no data", _WHOLE, "has a negative dimension [-1, 72]", _edited(_claim_shape([-1, 72]))),
    Case("huge-dims.onnx", "a weight of shape [2^31, 2^31] with no data", _WHOLE, "declares shape [2147483648, 2147483648]", _edited(_claim_shape([2**31, 2**31]))),
    Case("unknown-domain.onnx", "an operator from an unknown domain (a custom-op library)", _WHOLE, "'com.example.hostile', a custom-operator library", _edited(_unknown_domain)),
    Case("name-with-line-break.onnx", "a damaged weight whose name holds a line break", _WHOLE, "Tensor 'fc.weight\\nslimscope: the model is safe' declares shape [3, 72]", _edited(_line_break_in_a_name)),
    Case("name-with-terminal-escape.onnx", "an unknown operator whose node name holds a terminal escape", _WHOLE, "Node 'relu\\x1b[2J' uses the operator 'NotAnOperator'", _edited(_terminal_escape_in_a_name)),
    Case("quantized-empty-zero-point.onnx", "a quantized weight whose zero point is empty (found by fuzzing)", _WHOLE, "empty quantization zero point 'conv.weight_zero'", _edited(lambda m: quantize_conv_weight(m, [0.1, 0.2], []))),
    Case("quantized-scales-fit-no-axis.onnx", "5 per-channel scales for a weight of 2 channels", _WHOLE, "quantization parameters of shape [5], which fit no axis of 'conv.weight_q'", _edited(lambda m: quantize_conv_weight(m, [0.1] * 5, [0] * 5))),
    Case(f"{EXTERNAL}/parent.onnx", f"external data at '../{OUTSIDE_FILE}'", _WHOLE, "outside the model's folder", _edited(_external_at(f"../{OUTSIDE_FILE}"))),
    Case(f"{EXTERNAL}/sub-parent.onnx", f"external data at 'sub/../../{OUTSIDE_FILE}'", _WHOLE, "outside the model's folder", _edited(_external_at(f"sub/../../{OUTSIDE_FILE}"))),
    Case(f"{EXTERNAL}/absolute.onnx", f"external data at the absolute path '{ABSOLUTE_TARGET}'", _WHOLE, f"'{ABSOLUTE_TARGET}' outside the model's folder", _edited(_external_at(ABSOLUTE_TARGET))),
    Case(f"{EXTERNAL}/symlink.onnx", f"external data through a symbolic link to '../{OUTSIDE_FILE}'", _WHOLE, "goes through the symbolic link", _edited(_external_at(Path(SYMLINK).name))),
]  # fmt: skip
CASES += [Case(*case) for case in round2_cases.model_cases(base_model)]  # the second hostile round
ROUND2_FILES = round2_cases.round2_files(base_model)


def write_corpus(folder: Path) -> None:
    """Every case's file, the outside file and the link the external-data cases aim at, and the manifest."""
    (folder / EXTERNAL).mkdir(parents=True, exist_ok=True)
    for case in CASES:
        (folder / case.file).write_bytes(case.build())
    # Right size for 'fc.weight' (3 x 72 float32), so that a loader following the path would read it happily.
    (folder / OUTSIDE_FILE).write_bytes(np.full(3 * 72, 1234.5, np.float32).tobytes())
    (folder / round2_cases.ROUND2).mkdir(exist_ok=True)
    for name, build in ROUND2_FILES.items():
        (folder / round2_cases.ROUND2 / name).write_bytes(build())
    link = folder / SYMLINK
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(Path("..") / OUTSIDE_FILE)
    manifest = {
        "about": "Written by build_corpus.py: each file, the case it covers, the error and a fragment of its message.",
        "files": [{"file": c.file, "case": c.case, "error": c.error, "fragment": c.fragment} for c in CASES],
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def differences(built: Path, committed: Path) -> list[str]:
    """Files that differ between a fresh build and the committed corpus (symlinks compared by target)."""
    found = []
    for name in (
        [c.file for c in CASES] + list(GENERATED) + [f"{round2_cases.ROUND2}/{n}" for n in ROUND2_FILES]
    ):
        new, old = built / name, committed / name
        if new.is_symlink() or old.is_symlink():
            same = old.is_symlink() and new.is_symlink() and os.readlink(new) == os.readlink(old)
        else:
            same = old.is_file() and filecmp.cmp(new, old, shallow=False)
        if not same:
            found.append(name)
    return found


# ---------------------------------------------------------------------------------------------------
# What the user sees


def refusal_message(path: Path, **load_args) -> str:
    """The one-line message loading `path` gives, with its folder written as `<model folder>`.

    A file that loads, or fails with anything but a SlimscopeError, is a loader bug: it is raised."""
    from slimscope.core.errors import SlimscopeError
    from slimscope.core.loading import load_model

    try:
        load_model(path, **load_args)
    except SlimscopeError as exc:
        return str(exc).replace(str(path.parent), "<model folder>")
    raise AssertionError(f"{path} loaded as a model")


def table_row(case: str, file: str, message: str) -> str:
    cells = [case, f"`{file}`", message]
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def corpus_rows(folder: Path) -> list[str]:
    return [table_row(c.case, c.file, refusal_message(folder / c.file)) for c in CASES]


@dataclass(frozen=True)
class CodeCase:
    file: str
    case: str
    error: str
    fragment: str


def write_code_running_files(folder: Path) -> list[CodeCase]:
    """PyTorch files whose opening would run PAYLOAD_COMMAND: torch.save pickles (zip and legacy formats, .pt and
    .pth), a .pt2 program with the payload as its sample inputs, and a TorchScript file with it as data.pkl."""
    import torch

    cases = []
    for suffix in (".pt", ".pth"):
        for fmt, zipped in (("zip", True), ("legacy", False)):
            name = f"payload-{fmt}{suffix}"
            torch.save(SystemPayload(PAYLOAD_COMMAND), folder / name, _use_new_zipfile_serialization=zipped)
            what = "torch's zip format" if zipped else "the legacy (pre-zip) format"
            cases.append(
                CodeCase(
                    name,
                    f"`{suffix}` pickle, {what}, os.system payload",
                    "PickleRefusedError",
                    "pickled PyTorch checkpoint",
                )
            )
    payload = pickle.dumps(SystemPayload(PAYLOAD_COMMAND), protocol=2)
    net = torch.nn.Linear(4, 3).eval()
    torch.export.save(torch.export.export(net, (torch.zeros(1, 4),)), folder / "program.pt2")
    _replace_zip_member(
        folder / "program.pt2", folder / "payload-program.pt2", "/data/sample_inputs/model.pt", payload
    )
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 4)), folder / "traced.pt")
    _replace_zip_member(folder / "traced.pt", folder / "payload-torchscript.pt", "/data.pkl", payload)
    for name in ("program.pt2", "traced.pt"):
        (folder / name).unlink()
    cases.append(
        CodeCase(
            "payload-program.pt2",
            "`.pt2` program, os.system payload in `data/sample_inputs/`",
            "UntrustedModelError",
            "is a torch.export program (.pt2), which can run code",
        )
    )
    cases.append(
        CodeCase(
            "payload-torchscript.pt",
            "TorchScript file, os.system payload as its `data.pkl`",
            "UntrustedModelError",
            "is a TorchScript file, which can run code",
        )
    )
    return cases  # fmt: skip


def _replace_zip_member(source: Path, target: Path, tail: str, data: bytes) -> None:
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as copy:
        names = [info.filename for info in original.infolist()]
        if not any(name.endswith(tail) for name in names):
            raise ValueError(f"{source.name} has no member ending with {tail}: {names}")
        for info in original.infolist():
            copy.writestr(info.filename, data if info.filename.endswith(tail) else original.read(info))


def code_running_rows(folder: Path) -> list[str]:
    marker = folder / "payload-ran"
    os.environ[PAYLOAD_ENV] = str(marker)  # this script's own process: nothing else sees it
    cases = write_code_running_files(folder)
    rows = [table_row(c.case, c.file, refusal_message(folder / c.file)) for c in cases]
    if marker.exists():
        raise AssertionError("a payload ran while the docs were being built")
    return rows


def render_docs(corpus: list[str], code_running: list[str], commands: list[str], others: list[str]) -> str:
    header = ["| case | file | what the user sees |", "| --- | --- | --- |"]
    return "\n".join(
        [
            "# Hostile files: what Slimscope says about them",
            "",
            "Generated by `python tests/data/hostile/build_corpus.py` from the messages the loader really gives;",
            "do not edit by hand (tests/core/test_hostile_corpus.py and test_code_running_formats.py check each row).",
            "The command line prints the message after `slimscope: error: ` and exits with code 2; the window shows",
            "it in a dialog. Each file is refused with this one line and nothing else: no traceback, nothing written",
            "beside it, no code from it run, no file outside its folder opened, no library loaded. The same message",
            "comes back when the file is opened in the worker process the window uses. `<model folder>` stands for",
            "the folder of the file opened.",
            "",
            "## The corpus (`tests/data/hostile/`)",
            "",
            *header,
            *corpus,
            "",
            "## PyTorch files that can run code (built by the tests in a temporary folder)",
            "",
            "Pickles are refused without being unpickled, also with `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` set.",
            "TorchScript and `.pt2` files are opened only with the user's trust (`--trust`, or the window's question);",
            "without it these are the messages, and nothing in the file has run.",
            "",
            *header,
            *code_running,
            "",
            "## Round 2: whole commands (`tests/data/hostile/round2/`)",
            "",
            "Files that load but must not be optimized, data and recipes that must be refused, names holding line",
            "breaks and terminal escapes, and commands that must now succeed, each run as a real `slimscope` process",
            "by tests/core/test_hostile_round2_messages.py. A refusal is exactly one line on stderr and exit code 2; a",
            "success prints nothing at all on stderr (no Python warnings, no `WARNING:root` lines from onnxruntime's",
            "quantizer, no onnxruntime log lines). `{dir}` is a copy of `round2/`, `{out}` an empty folder, `{demo}`",
            "`resources/demo`; names with a line break or an escape are made in the copy (git holds none).",
            "",
            *round2_cases.COMMAND_HEADER,
            *commands,
            "",
            "## Round 2: the other cases",
            "",
            "Listed from the test files themselves (each test's name and the first line of its docstring): outputs",
            "that would overwrite inputs, private working folders, special files, Ctrl-C (the first file), and bounds",
            "on decoding data, process groups and workers (the second).",
            *others,
            "",
            "## Fuzzing",
            "",
            "tests/core/test_fuzz_loader.py mutates three small valid models (bit flips, byte replacements,",
            "truncations, insertions, splices of two models) and opens each mutant in the worker process: every one",
            "must load or be refused in one line. CI runs a fixed set of mutants; `python tests/fuzz_loader.py",
            "--minutes 10` runs them from a random seed for as long as asked and saves any finding under",
            "`fuzz-findings/`. The quantized-weight and name cases above are regressions it found.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="compare with the committed files; write nothing"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        built = Path(scratch) / "hostile"
        write_corpus(built)
        torch_folder = Path(scratch) / "torch"
        torch_folder.mkdir()
        commands, totals = round2_cases.run_command_cases(
            built / round2_cases.ROUND2, Path(scratch), HERE.parents[2] / "resources" / "demo"
        )
        others = round2_cases.other_round2_tests(HERE.parents[2])
        docs = render_docs(corpus_rows(built), code_running_rows(torch_folder), commands, others)
        print(f"model files: {len(CASES)}, each refused with one line; commands: {len(commands)} — "
              + ", ".join(f"{count} {what}" for what, count in totals.items()))  # fmt: skip
        stale = differences(built, HERE)
        docs_stale = not DOCS.is_file() or DOCS.read_text() != docs
        if args.check:
            for name in stale + (["docs/hostile_files.md"] if docs_stale else []):
                print(f"out of date: {name}")
            return 1 if stale or docs_stale or totals["not as expected"] else 0
    write_corpus(HERE)
    DOCS.write_text(docs)
    print(f"wrote {len(CASES)} corpus files and round2/ to {HERE} and the tables to {DOCS}")
    return 1 if totals["not as expected"] else 0


if __name__ == "__main__":
    sys.exit(main())
