"""Mutated model files, opened through the window's worker process: each loads or is refused in one line.

hypothesis drives the mutations of tests/fuzz_loader.py (bit flips, byte replacements, truncations,
insertions, splices of two models) on three small valid models, and every mutant goes through ONE long-lived
`TaskProcess` ("open" job). Any other exception, a message of several lines, the worker dying or hanging, or
a file written beside the mutant fails the test; the mutant's bytes are saved for reproduction (the failure
says where). The run is derandomized, so CI sees the same mutants every time; `python tests/fuzz_loader.py
--minutes N` runs the same mutations for longer from random seeds.

EXAMPLES is tuned by measuring on the 2-core development machine while it ran other work (load average 6):
3,000 examples in 21-27 s (1-18 ms each, plus ~2 s to start the worker), well inside the 60 s CI budget.
The longer script found the line-break and quantization findings in its first minutes; after their fixes
a 10-minute run from a random seed (171,417 mutants: 10,544 loaded, 160,873 refused) found nothing.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slimscope.core.errors import ModelLoadError, OptimizeError
from slimscope.core.task_process import TaskProcess

T = TypeVar("T")
FUZZ_SCRIPT = Path(__file__).resolve().parents[1] / "fuzz_loader.py"
EXAMPLES = 3000
LIMIT_S = 60.0  # one mutant; far beyond the slowest seen (the first starts the worker: ~2 s)


def _fuzz_script() -> ModuleType:
    """tests/fuzz_loader.py, a script, imported from its path (once per session)."""
    if "fuzz_loader" not in sys.modules:
        spec = importlib.util.spec_from_file_location("fuzz_loader", FUZZ_SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["fuzz_loader"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["fuzz_loader"]


fuzz = _fuzz_script()
SEEDS = fuzz.seed_models()


class HypothesisDraws:
    """The fuzzer's source of choices, drawn from hypothesis so that it can shrink a failing mutant."""

    def __init__(self, data: st.DataObject):
        self.data = data

    def integer(self, low: int, high: int) -> int:
        return self.data.draw(st.integers(low, high))

    def choice(self, options: Sequence[T]) -> T:
        return self.data.draw(st.sampled_from(options))

    def raw(self, size: int) -> bytes:
        return self.data.draw(st.binary(min_size=size, max_size=size))


@pytest.fixture(scope="module")
def worker() -> Iterator[TaskProcess]:
    process = TaskProcess("test")
    yield process
    process.close()


@pytest.fixture(scope="module")
def mutant_path(tmp_path_factory) -> Path:
    """Where each mutant is written, alone in its folder (so that anything written beside it shows)."""
    return tmp_path_factory.mktemp("mutant") / "mutant.onnx"


@pytest.fixture(scope="module")
def findings(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz-findings")


def test_every_seed_model_loads_in_the_worker(worker, mutant_path):
    for seed in SEEDS:
        mutant_path.write_bytes(seed)
        assert fuzz.open_in_worker(worker, mutant_path, LIMIT_S) == fuzz.Outcome("loaded", "")


def test_mutations_change_the_bytes_in_every_way():
    import random

    draws = fuzz.RandomDraws(random.Random(0))
    mutants = [fuzz.mutate(draws, SEEDS) for _ in range(200)]

    assert all(m not in SEEDS for m in mutants[:20] if m)  # hardly ever a no-op
    assert {len(m) for m in mutants} - {len(s) for s in SEEDS}  # truncations, insertions and splices resize
    for kind, mutator in fuzz.MUTATORS.items():
        changed = mutator(draws, bytearray(SEEDS[0]), SEEDS)
        assert bytes(changed) != SEEDS[0] or kind == "splice", kind


class FakeWorker:
    """Stands in for the TaskProcess to show that the judge notices each kind of failure."""

    def __init__(self, behaviour: str, folder: Path):
        self.behaviour, self.folder, self.alive = behaviour, folder, True

    def run(self, job: str, *args):
        yield from ()
        if self.behaviour == "hang":
            time.sleep(1.0)
        elif self.behaviour == "crash":
            self.alive = False
            raise OptimizeError("The optimizer process stopped unexpectedly (signal 11).")
        elif self.behaviour == "bug":
            raise KeyError("graph")
        elif self.behaviour == "two-lines":
            raise ModelLoadError("first line\nsecond line")
        elif self.behaviour == "writes":
            (self.folder / "mutant-inferred.onnx").write_bytes(b"")
        elif self.behaviour == "refuses":
            raise ModelLoadError("One line.")

    def close(self, timeout: float = 3.0) -> None:
        self.alive = False


@pytest.mark.parametrize(
    ("behaviour", "kind", "says"),
    [
        ("loads", "loaded", ""),
        ("refuses", "refused", "One line."),
        ("hang", "finding", "no answer within 0.2 s"),
        ("crash", "finding", "the worker process died"),
        ("bug", "finding", "KeyError: 'graph'"),
        ("two-lines", "finding", "not one line"),
        ("writes", "finding", "files written beside the model: ['mutant-inferred.onnx', 'mutant.onnx']"),
    ],
)
def test_the_judge_tells_findings_from_refusals(behaviour, kind, says, tmp_path, findings):
    path = tmp_path / "mutant.onnx"
    path.write_bytes(SEEDS[0])

    outcome = fuzz.open_in_worker(FakeWorker(behaviour, tmp_path), path, limit_s=0.2)

    assert outcome.kind == kind and says in outcome.detail, outcome
    if kind == "finding":  # and what a failing test saves can be opened again
        saved = fuzz.save_finding(findings, path.read_bytes(), outcome)
        assert saved.read_bytes() == SEEDS[0]
        assert says in saved.with_suffix(".txt").read_text()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,  # nothing written into the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@pytest.mark.slow  # over 10 s: CI's second stage
@given(data=st.data())
def test_a_mutated_model_loads_or_is_refused_in_one_line(data, worker, mutant_path, findings):
    mutant = fuzz.mutate(HypothesisDraws(data), SEEDS)
    mutant_path.write_bytes(mutant)

    outcome = fuzz.open_in_worker(worker, mutant_path, LIMIT_S)

    if outcome.kind == "finding":
        saved = fuzz.save_finding(findings, mutant, outcome)
        pytest.fail(f"{outcome.detail[:500]} (the mutant is saved as {saved})")
