"""How far the optimized model's outputs are from the original's, accumulated batch by batch.

Sums are kept in float64 so that a thousand batches of float32 outputs add up without rounding away
the small differences quantization makes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from slimscope.core.errors import DatasetError


def sqnr_db(signal: float, noise: float) -> float:
    """10·log10(signal / noise): inf when the outputs are identical, -inf when the original is all zero."""
    if noise == 0:
        return math.inf
    if signal == 0:
        return -math.inf
    return 10 * math.log10(signal / noise)


def class_scores(output: np.ndarray, samples: int) -> np.ndarray | None:
    """The output as [N, classes] if it is classifier-shaped ([N, C] or [N, C, 1, 1]), else None."""
    if output.ndim < 2 or output.shape[0] != samples:
        return None
    while output.ndim > 2 and output.shape[-1] == 1:
        output = output[..., 0]
    return output if output.ndim == 2 and output.shape[1] >= 2 else None


@dataclass(frozen=True)
class RunningMetrics:
    """The partial result an evaluation yields after each batch, so a GUI can show it growing."""

    samples: int  # compared so far
    total: int
    accuracy: dict[str, float] | None  # {"original", "optimized"}; None without labels or classes
    agreement: float | None  # top-1 agreement of the two models; None if not classifier-shaped


@dataclass
class OutputComparison:
    """Running comparison of the two models' outputs (matched by position)."""

    signal: float = 0.0  # sum of original²
    noise: float = 0.0  # sum of (original - optimized)²
    cosine_sum: float = 0.0
    cosine_samples: int = 0  # samples whose outputs are all batch-first, so a per-sample cosine exists
    samples: int = 0
    agreeing: int = 0
    correct: dict[str, int] = field(default_factory=lambda: {"original": 0, "optimized": 0})
    classifier: bool = True  # until an output says otherwise
    compared_outputs: int = 0
    mismatches: dict[int, str] = field(default_factory=dict)  # output index → why it is left out
    output_counts: tuple[int, int] | None = None  # (original, optimized) when they differ
    nonfinite: set[str] = field(default_factory=set)  # roles whose outputs held NaN or inf
    measured_on: str = "the outputs"  # what SQNR and cosine compare (`logits.MeasuredOutputs.description`)

    def add(
        self,
        original: list[np.ndarray],
        optimized: list[np.ndarray],
        labels: np.ndarray | None,
        measured: tuple[list[np.ndarray], list[np.ndarray]] | None = None,
    ) -> None:
        """One batch of both models' outputs; `measured`: what SQNR and cosine compare in their place
        (the logits before a final Softmax, `logits.MeasuredOutputs.split`), else the outputs."""
        count = len(original[0]) if original and original[0].ndim else 0
        pairs = self._comparable(*(measured or (original, optimized)))
        for role, outputs in (("original", original), ("optimized", optimized)):
            if not all(np.isfinite(o).all() for o in outputs if np.issubdtype(o.dtype, np.inexact)):
                self.nonfinite.add(role)
        for a, b in pairs:
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            self.signal += float(np.square(a64).sum())
            self.noise += float(np.square(a64 - b64).sum())
        self.compared_outputs = len(pairs)
        batch_first = [(a, b) for a, b in pairs if a.ndim and len(a) == count]
        if batch_first and count:
            self.cosine_sum += _cosine_sum(batch_first, count)
            self.cosine_samples += count
        self._add_classes(
            original[0] if original else None, optimized[0] if optimized else None, labels, count
        )
        self.samples += count

    def _comparable(self, original: list[np.ndarray], optimized: list[np.ndarray]) -> list[tuple]:
        pairs = []
        for index, (a, b) in enumerate(zip(original, optimized, strict=False)):
            if a.shape != b.shape:
                self.mismatches[index] = (
                    f"shape {list(b.shape)} in the optimized model, {list(a.shape)} in the original"
                )
            elif index not in self.mismatches:
                pairs.append((a, b))
        if len(original) != len(optimized):
            self.output_counts = (len(original), len(optimized))
        return pairs

    def _add_classes(self, original, optimized, labels: np.ndarray | None, count: int) -> None:
        scores_a = None if original is None else class_scores(original, count)
        scores_b = None if optimized is None else class_scores(optimized, count)
        if scores_a is None or scores_b is None or scores_a.shape != scores_b.shape:
            self.classifier = False
        if not self.classifier or scores_a is None or scores_b is None:
            return
        top_a, top_b = scores_a.argmax(axis=1), scores_b.argmax(axis=1)
        self.agreeing += int((top_a == top_b).sum())
        if labels is not None:
            if len(labels) and labels.max() >= scores_a.shape[1]:
                raise DatasetError(
                    f"The data has class labels up to {int(labels.max())}, but the model outputs "
                    f"{scores_a.shape[1]} classes (0 to {scores_a.shape[1] - 1})."
                )
            self.correct["original"] += int((top_a == labels).sum())
            self.correct["optimized"] += int((top_b == labels).sum())

    def merge(self, other: OutputComparison) -> None:
        """Add the counts of a comparison made on other samples (a worker's share of the data)."""
        self.signal += other.signal
        self.noise += other.noise
        self.cosine_sum += other.cosine_sum
        self.cosine_samples += other.cosine_samples
        self.samples += other.samples
        self.agreeing += other.agreeing
        for role in self.correct:
            self.correct[role] += other.correct[role]
        self.classifier = self.classifier and other.classifier
        self.compared_outputs = max(self.compared_outputs, other.compared_outputs)
        self.mismatches |= other.mismatches
        self.output_counts = self.output_counts or other.output_counts
        self.nonfinite |= other.nonfinite
        self.measured_on = other.measured_on

    def agreement(self) -> float | None:
        return self.agreeing / self.samples if self.classifier and self.samples else None

    def accuracy(self, labelled: bool) -> dict[str, float] | None:
        if not (labelled and self.classifier and self.samples):
            return None
        return {role: correct / self.samples for role, correct in self.correct.items()}

    def sqnr_db(self) -> float | None:
        return sqnr_db(self.signal, self.noise) if self.compared_outputs else None

    def cosine(self) -> float | None:
        return self.cosine_sum / self.cosine_samples if self.cosine_samples else None

    def running(self, total: int, labelled: bool) -> RunningMetrics:
        return RunningMetrics(self.samples, total, self.accuracy(labelled), self.agreement())


def _cosine_sum(pairs: list[tuple[np.ndarray, np.ndarray]], count: int) -> float:
    """Sum over samples of the cosine between the two models' outputs (all outputs of a sample joined)."""
    a = np.concatenate([p[0].reshape(count, -1).astype(np.float64) for p in pairs], axis=1)
    b = np.concatenate([p[1].reshape(count, -1).astype(np.float64) for p in pairs], axis=1)
    norm_a, norm_b = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    norms = norm_a * norm_b
    dots = np.einsum("ij,ij->i", a, b)
    both_zero = (norm_a == 0) & (norm_b == 0)  # two zero outputs agree perfectly
    cosines = np.where(both_zero, 1.0, np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0))
    return float(np.clip(cosines, -1.0, 1.0).sum())
