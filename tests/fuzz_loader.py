#!/usr/bin/env python3
"""Fuzz the model loader: mutate valid models' bytes and open every mutant in the window's worker process.

    python tests/fuzz_loader.py --minutes 10 [--seed N] [--out fuzz-findings]

Each mutant must either load or be refused with a one-line `SlimscopeError`. Anything else is a finding:
another exception, a message of several lines, the worker process dying (a crash in a native library, or
a memory limit) or not answering in time, or a file written beside the mutant. Findings are saved under
`--out` as `<sha256>.onnx`, the exact bytes, with `<sha256>.txt` saying what happened; the script exits 1
when there were any. `slimscope inspect <file>` reproduces one.

tests/core/test_fuzz_loader.py runs the same mutations through hypothesis, bounded for CI; this script runs
them for as long as asked, from a random seed (printed, so that a run can be repeated with --seed).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------------
# Valid models to start from: a float conv net, a net with a Constant, typed data and an If subgraph,
# and a quantized (QDQ) one. None computes a size from its data (ConstantOfShape, Expand, Tile, Range):
# a flipped bit there would ask for a legitimately large but slow allocation instead of finding a bug.


def _model(nodes, inputs, outputs, initializers, opset: int = 13) -> bytes:
    graph = helper.make_graph(nodes, "seed", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def _float(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def conv_seed() -> bytes:
    conv = np.linspace(-1, 1, 18, dtype=np.float32).reshape(2, 1, 3, 3)
    fc = np.linspace(-0.5, 0.5, 3 * 32, dtype=np.float32).reshape(3, 32)
    nodes = [
        helper.make_node("Conv", ["x", "conv.w", "conv.b"], ["c"], name="conv", pads=[1] * 4),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], name="fc", transB=1),
    ]
    weights = {
        "conv.w": conv,
        "conv.b": np.array([0.1, -0.1], np.float32),
        "fc.w": fc,
        "fc.b": np.zeros(3, np.float32),
    }
    initializers = [numpy_helper.from_array(value, name) for name, value in weights.items()]
    return _model(nodes, [_float("x", [1, 1, 4, 4])], [_float("y", [1, 3])], initializers)


def branch_seed() -> bytes:
    constant = helper.make_tensor(
        "c", TensorProto.FLOAT, [2, 4], [0.5, -1, 2, 0, 1, 1, -0.5, 3]
    )  # float_data
    branch = lambda op: helper.make_graph(  # noqa: E731 - two one-node branches
        [helper.make_node(op, ["m"], [f"out_{op}"])], f"branch_{op}", [], [_float(f"out_{op}", [1, 2])]
    )
    nodes = [
        helper.make_node("Constant", [], ["c"], name="const", value=constant),
        helper.make_node("Transpose", ["c"], ["ct"], name="transpose"),
        helper.make_node("MatMul", ["x", "ct"], ["m"], name="matmul"),
        helper.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
        helper.make_node("Cast", ["s"], ["cond"], name="cast", to=TensorProto.BOOL),
        helper.make_node(
            "If", ["cond"], ["y"], name="choose", then_branch=branch("Identity"), else_branch=branch("Neg")
        ),
    ]
    return _model(nodes, [_float("x", [1, 4])], [_float("y", [1, 2])], [])


def qdq_seed() -> bytes:
    weight = (np.arange(18, dtype=np.int8) - 9).reshape(2, 1, 3, 3)
    initializers = [
        numpy_helper.from_array(weight, "w_q"),
        numpy_helper.from_array(np.array(0.05, np.float32), "w_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "w_zero"),
        numpy_helper.from_array(np.array(0.02, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "x_zero"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"], name="quantize"),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"], name="dequantize"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], name="weight_dq"),
        helper.make_node("Conv", ["xd", "w"], ["y"], name="conv"),
    ]
    return _model(nodes, [_float("x", [1, 1, 5, 5])], [_float("y", [1, 2, 3, 3])], initializers)


def seed_models() -> list[bytes]:
    return [conv_seed(), branch_seed(), qdq_seed()]  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Mutations. A source of choices drives them: random.Random here, hypothesis in the test (so that it can
# shrink a finding to the smallest mutation that still shows it).


class Draws(Protocol):
    def integer(self, low: int, high: int) -> int: ...  # low..high inclusive
    def choice(self, options: Sequence[T]) -> T: ...
    def raw(self, size: int) -> bytes: ...


class RandomDraws:
    def __init__(self, rng: random.Random):
        self.rng = rng

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def choice(self, options: Sequence[T]) -> T:
        return self.rng.choice(options)

    def raw(self, size: int) -> bytes:
        return self.rng.randbytes(size)


# Bytes that change protobuf's meaning most: zero, a varint's continuation bit, all ones.
INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFF)

Mutator = Callable[[Draws, bytearray, Sequence[bytes]], bytearray]


def _flip_bit(draws: Draws, data: bytearray, seeds: Sequence[bytes]) -> bytearray:
    if data:
        data[draws.integer(0, len(data) - 1)] ^= 1 << draws.integer(0, 7)
    return data


def _replace_bytes(draws: Draws, data: bytearray, seeds: Sequence[bytes]) -> bytearray:
    if data:
        start = draws.integer(0, len(data) - 1)
        size = draws.integer(1, min(8, len(data) - start))
        data[start : start + size] = draws.raw(size)
    return data


def _interesting_byte(draws: Draws, data: bytearray, seeds: Sequence[bytes]) -> bytearray:
    if data:
        data[draws.integer(0, len(data) - 1)] = draws.choice(INTERESTING_BYTES)
    return data


def _truncate(draws: Draws, data: bytearray, seeds: Sequence[bytes]) -> bytearray:
    return data[: draws.integer(0, len(data))]


def _insert_bytes(draws: Draws, data: bytearray, seeds: Sequence[bytes]) -> bytearray:
    at = draws.integer(0, len(data))
    data[at:at] = draws.raw(draws.integer(1, 16))
    return data


def _splice(draws: Draws, data: bytearray, seeds: Sequence[bytes]) -> bytearray:
    other = draws.choice(seeds)
    return data[: draws.integer(0, len(data))] + bytearray(other[draws.integer(0, len(other)) :])


MUTATORS: dict[str, Mutator] = {
    "flip": _flip_bit,
    "replace": _replace_bytes,
    "interesting": _interesting_byte,
    "truncate": _truncate,
    "insert": _insert_bytes,
    "splice": _splice,
}
_KINDS = tuple(MUTATORS)


def mutate(draws: Draws, seeds: Sequence[bytes], most: int = 4) -> bytes:
    """One of `seeds` with 1..`most` mutations applied in a row."""
    data = bytearray(draws.choice(seeds))
    for _ in range(draws.integer(1, most)):
        data = MUTATORS[draws.choice(_KINDS)](draws, data, seeds)
    return bytes(data)


# ---------------------------------------------------------------------------------------------------
# Opening a mutant and judging what happened


@dataclass(frozen=True)
class Outcome:
    kind: str  # "loaded", "refused" or "finding"
    detail: str  # the message, or what went wrong


def open_in_worker(worker, path: Path, limit_s: float = 60.0) -> Outcome:
    """Open `path` with the worker's "open" job; a job still running after `limit_s` is a hang (the worker
    is closed, and the next job starts a new one)."""
    from slimscope.core.errors import SlimscopeError
    from slimscope.core.tasks import run_sync

    stopped: list[bool] = []

    def stop_hung_worker() -> None:
        stopped.append(True)
        worker.close(timeout=1.0)

    watchdog = threading.Timer(limit_s, stop_hung_worker)
    watchdog.start()
    try:
        run_sync(worker.run("open", path, False, None))
        outcome = Outcome("loaded", "")
    except SlimscopeError as exc:
        outcome = Outcome("refused", str(exc))
    except Exception as exc:  # noqa: BLE001 - any other exception is what the fuzzer looks for
        outcome = Outcome("finding", f"{type(exc).__name__}: {exc}")
    finally:
        watchdog.cancel()
    if stopped:
        return Outcome("finding", f"no answer within {limit_s:g} s: {outcome.detail}")
    if not worker.alive:
        return Outcome("finding", f"the worker process died: {outcome.detail}")
    if outcome.kind == "refused" and (not outcome.detail.strip() or "\n" in outcome.detail):
        return Outcome("finding", f"a message that is not one line: {outcome.detail!r}")
    if sorted(p.name for p in path.parent.iterdir()) != [path.name]:
        return Outcome(
            "finding", f"files written beside the model: {sorted(p.name for p in path.parent.iterdir())}"
        )
    return outcome


def save_finding(folder: Path, data: bytes, outcome: Outcome) -> Path:
    """The mutant's exact bytes as <sha256>.onnx, and what happened in <sha256>.txt; returns the .onnx path."""
    folder.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(data).hexdigest()[:16]
    path = folder / f"{name}.onnx"
    path.write_bytes(data)
    (folder / f"{name}.txt").write_text(f"{outcome.detail}\nreproduce: slimscope inspect {path}\n")
    return path


# ---------------------------------------------------------------------------------------------------


def run(minutes: float, seed: int, out: Path, limit_s: float) -> Counter:
    from slimscope.core.task_process import TaskProcess

    rng, seeds, counts = random.Random(seed), seed_models(), Counter[str]()
    worker = TaskProcess("fuzz")
    started = last_report = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="slimscope-fuzz-") as scratch:
            path = Path(scratch) / "mutant.onnx"
            while time.monotonic() - started < minutes * 60:
                data = mutate(RandomDraws(rng), seeds)
                path.write_bytes(data)
                outcome = open_in_worker(worker, path, limit_s)
                counts[outcome.kind] += 1
                if outcome.kind == "finding":
                    print(
                        f"finding: {outcome.detail[:300]} -> {save_finding(out, data, outcome)}", flush=True
                    )
                    for extra in set(Path(scratch).iterdir()) - {path}:
                        extra.unlink()
                if time.monotonic() - last_report > 30:
                    last_report = time.monotonic()
                    print(f"{time.monotonic() - started:5.0f} s: {dict(counts)}", flush=True)
    finally:
        worker.close()
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to run (default 10)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a new one, printed)")
    parser.add_argument("--out", type=Path, default=Path("fuzz-findings"), help="folder for findings")
    parser.add_argument("--limit", type=float, default=60.0, help="seconds one mutant may take (default 60)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    print(f"fuzzing the loader for {args.minutes:g} minutes from seed {seed}", flush=True)
    started = time.monotonic()
    counts = run(args.minutes, seed, args.out, args.limit)
    total = sum(counts.values())
    print(f"{total} mutants in {time.monotonic() - started:.0f} s: {dict(counts)}; findings in {args.out}/")
    return 1 if counts["finding"] else 0


if __name__ == "__main__":
    sys.exit(main())
