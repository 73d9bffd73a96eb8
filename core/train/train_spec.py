"""The recipe's "training" section: how retraining runs (schedule, epochs, optimizer, QAT), as typed data.

The recipe validates the section against `recipe.schema.json`; this module turns it into frozen
dataclasses with defaults, and back into the JSON the recipe writes (only fields that differ).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class AugmentSettings:
    """Augmentations applied to training batches (never to validation)."""

    shift: int = 0  # random translation by up to this many pixels
    flip: bool = False  # random horizontal flip (off: digits and text are not symmetric)
    noise: float = 0.0  # std of Gaussian noise on the model-ready input


@dataclass(frozen=True)
class QatSettings:
    """Quantization-aware training after the recipe's quantization; epochs 0 turns it off."""

    epochs: int = 2
    learning_rate: float = 1e-4
    ranges: Literal["calibrated", "learned"] = "calibrated"  # activation ranges kept, or learned (LSQ)


@dataclass(frozen=True)
class TrainSpec:
    """Gradual pruning with fine-tuning, then QAT when the recipe quantizes."""

    steps: int = 4  # pruning steps from 0 to the recipe's target
    schedule: Literal["cubic", "linear"] = (
        "cubic"  # how sparsity rises over the steps (cubic: Zhu & Gupta 2017)
    )
    epochs_per_step: int = 1  # fine-tuning epochs after each pruning step but the last
    final_epochs: int = 3  # fine-tuning epochs after the last step (early stop may end them sooner)
    batch_size: int = 64
    # Adam at 1e-3 by default: measured (benchmarks/retrain_recovery.py --training default), it brought 80 %
    # global sparsity back within 1.5 points of dense on the demo, a MobileNetV2 and a VGG, where SGD at 0.01
    # left the MobileNetV2 at 58.8 % (dense 97.6 %) and issue 14's VGG at 77.2 % (dense 97.7 %).
    learning_rate: float = 1e-3
    optimizer: Literal["sgd", "adam"] = "adam"  # Adam, or SGD with Nesterov momentum 0.9
    weight_decay: float = 0.0
    lr_schedule: Literal["cosine", "constant"] = "cosine"  # cosine decay within each fine-tuning phase
    patience: int = 2  # final phase: stop after this many epochs without a better validation accuracy
    val_fraction: float = 0.1  # split from the training data when no validation data is given
    max_batches_per_epoch: int | None = None  # small epochs for quick runs; None reads all the data
    seed: int = 0
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    qat: QatSettings = field(default_factory=QatSettings)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> TrainSpec:
        """From the validated "training" section (absent keys take their defaults)."""
        raw = dict(data or {})
        augment = AugmentSettings(**raw.pop("augment", {}))
        qat = QatSettings(**raw.pop("qat", {}))
        for key in ("learning_rate", "weight_decay", "val_fraction"):  # JSON may give 1 for 1.0
            if key in raw:
                raw[key] = float(raw[key])
        return cls(augment=augment, qat=qat, **raw)

    def to_dict(self) -> dict[str, Any]:
        """The fields that differ from the defaults, nested sections included (empty when all default)."""
        default = asdict(TrainSpec())
        result: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if isinstance(value, dict):
                changed = {k: v for k, v in value.items() if v != default[key][k]}
                if changed:
                    result[key] = changed
            elif value != default[key]:
                result[key] = value
        return result


def sparsity_fraction(schedule: str, step: int, steps: int) -> float:
    """The fraction of the target sparsity reached after pruning step `step` (1-based) of `steps`:
    cubic rises fast while many redundant weights remain and slowly near the target."""
    if steps < 1 or not 1 <= step <= steps:
        raise ValueError(f"step {step} of {steps}")
    progress = step / steps
    if schedule == "linear":
        return progress
    return 1.0 - (1.0 - progress) ** 3
