"""Recover accuracy by retraining: gradual pruning with fine-tuning, then quantization-aware training.

`iter_finetune` is one generator for the CLI (`slimscope finetune`) and the GUI (a worker process).
It first applies the recipe without retraining (the post-training result, for an honest side-by-side),
then runs *blocks* of epochs:

- one block per pruning step: the recipe's pruning asked at the schedule's fraction of its targets
  (`prune_masks.step_masks`), then fine-tuning with the masked entries held at zero;
- after the last step the optimizer applies the whole recipe to the fine-tuned weights (channels removed
  for real, quantized with calibration), and when the recipe quantizes, a QAT block fine-tunes that
  quantized model with quantization simulated (`onnx_module`), whose weights and ranges are written back.

The final block of each phase stops early when validation accuracy stops improving and keeps its best
weights. After every epoch a checkpoint is written (when a folder is given), from which a cancelled run
resumes at the next epoch.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from slimscope.core.errors import TrainingError
from slimscope.core.model import LoadedModel
from slimscope.core.recipe import Recipe
from slimscope.core.tasks import Progress, Task, scaled
from slimscope.core.train import checkpoints
from slimscope.core.train.prune_masks import PruneTargets, prune_targets
from slimscope.core.train.train_data import TrainingData
from slimscope.core.train.train_spec import TrainSpec, sparsity_fraction
from slimscope.core.train.trainer import Block, Trainer, TrainingEvent


@dataclass(frozen=True)
class FinetuneBaseline:
    """The partial result before training: what the recipe gives without retraining."""

    dense_accuracy: float
    post_training_accuracy: float
    post_training_seconds: float


@dataclass
class FinetuneResult:
    model: onnx.ModelProto  # retrained and optimized: what to export
    post_training: onnx.ModelProto  # the recipe applied without retraining
    accuracy: dict[str, float]  # "dense", "post_training", "retrained" (validation data, onnxruntime)
    simulated_accuracy: float | None  # the QAT module's own accuracy, when QAT ran
    seconds: dict[str, float]  # "post_training", "retraining"
    history: list[TrainingEvent] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    resumed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "simulated_accuracy": self.simulated_accuracy,
            "seconds": self.seconds,
            "history": [asdict(event) for event in self.history if event.val_accuracy is not None],
            "notes": self.notes,
            "resumed": self.resumed,
        }


def iter_finetune(
    loaded: LoadedModel,
    recipe: Recipe,
    train: TrainingData,
    val: TrainingData,
    *,
    calibration: np.ndarray | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    threads: int | None = None,
) -> Task[FinetuneResult]:
    """Yield progress (partials: FinetuneBaseline, then TrainingEvents); return the retrained model.

    `threads`: PyTorch's intra-op threads while training (None: PyTorch's default). Measured on a busy
    2-core host, one thread trained the demo 7x faster than two: OpenMP threads spin-wait for each other
    when the cores are shared."""
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(max(1, threads))
    try:
        return (yield from _finetune(loaded, recipe, train, val, calibration, checkpoint_dir, resume))
    finally:
        torch.set_num_threads(previous)


def _finetune(loaded, recipe, train, val, calibration, checkpoint_dir, resume) -> Task[FinetuneResult]:
    from slimscope.core.train.onnx_module import to_torch

    spec: TrainSpec = recipe.training
    targets = prune_targets(loaded.model, recipe)
    quantizes = _quantizes(loaded.model, recipe)
    blocks = _plan_blocks(spec, targets, quantizes)
    to_torch(loaded.model)  # fails now, before anything long, if PyTorch cannot run the model
    if quantizes and calibration is None:
        calibration = _calibration_from(train, recipe)
    run = _Run(loaded, recipe, spec, train, val, calibration, targets)
    yield Progress(0.0, "Applying the recipe without retraining")
    started = time.perf_counter()
    run.post_training = yield from scaled(run.optimize(loaded.model), 0.0, 0.07, None)
    post_seconds = time.perf_counter() - started
    yield Progress(0.07, "Measuring the dense and post-training accuracy")
    run.accuracy["dense"] = onnx_accuracy(loaded.model, val)
    run.accuracy["post_training"] = onnx_accuracy(run.post_training, val)
    baseline = FinetuneBaseline(run.accuracy["dense"], run.accuracy["post_training"], post_seconds)
    yield Progress(0.1, "Post-training result measured", baseline)
    if checkpoint_dir is not None:
        run.use_checkpoints(checkpoint_dir, resume)
    final = yield from run.train(blocks)
    run.accuracy["retrained"] = onnx_accuracy(final, val)
    yield Progress(1.0, "Retrained")
    return FinetuneResult(
        final,
        run.post_training,
        run.accuracy,
        run.simulated_accuracy,
        {"post_training": post_seconds, "retraining": run.elapsed()},
        run.history,
        run.notes,
        run.resumed,
    )


def _plan_blocks(spec: TrainSpec, targets: PruneTargets, quantizes: bool) -> list[Block]:
    blocks = []
    if targets:
        for step in range(1, spec.steps + 1):
            last = step == spec.steps
            epochs = spec.final_epochs if last else spec.epochs_per_step
            blocks.append(
                Block("prune", step, epochs, sparsity_fraction(spec.schedule, step, spec.steps), last)
            )
    if quantizes and spec.qat.epochs > 0:
        blocks.append(Block("qat", 0, spec.qat.epochs, 1.0, True))
    if not blocks:
        raise TrainingError(
            "There is nothing to retrain: the recipe neither prunes nor quantizes with QAT epochs "
            "(set 'prune' or 'quantize' in the recipe)."
        )
    return blocks


def _quantizes(model: onnx.ModelProto, recipe: Recipe) -> bool:
    from slimscope.core.layers import find_layers

    return any(recipe.settings_for(layer.name).quantize is not None for layer in find_layers(model, {}))


def _calibration_from(train: TrainingData, recipe: Recipe) -> np.ndarray:
    """The first samples of the training data, as many as the recipe calibrates on."""
    from slimscope.core.optimize import DEFAULT_CALIBRATION_SAMPLES

    wanted = int(recipe.data.get("calibration_samples", DEFAULT_CALIBRATION_SAMPLES))
    chunks, count = [], 0
    for x, _ in train.batches(min(wanted, 256), shuffle=False):
        chunks.append(x)
        count += len(x)
        if count >= wanted:
            break
    return np.concatenate(chunks)[:wanted]


def onnx_accuracy(model: onnx.ModelProto, data: TrainingData) -> float:
    """Top-1 accuracy of `model` in onnxruntime on labelled `data` (a fixed batch is padded)."""
    from slimscope.core.evaluate.sessions import create_runner

    runner = create_runner(model, "retrained")
    correct = total = 0
    for x, y in data.batches(runner.batch, shuffle=False):
        count = len(x)
        if runner.fixed_batch and count < runner.batch:
            x = np.concatenate([x, np.repeat(x[-1:], runner.batch - count, axis=0)])
        scores = runner.run(x)[0][:count].reshape(count, -1)
        correct += int((scores.argmax(axis=1) == y).sum())
        total += count
    return correct / max(total, 1)


class _Run:
    """The state of one retraining run: the module being trained, its masks, optimizer and history."""

    def __init__(self, loaded, recipe, spec, train, val, calibration, targets) -> None:
        self.loaded, self.recipe, self.spec = loaded, recipe, spec
        self.train_data, self.val, self.calibration, self.targets = train, val, calibration, targets
        self.accuracy: dict[str, float] = {}
        self.history: list[TrainingEvent] = []
        self.notes: list[str] = []
        self.simulated_accuracy: float | None = None
        self.post_training: onnx.ModelProto | None = None
        self.checkpoint: Path | None = None
        self.saved: dict[str, Any] | None = None
        self.resumed = False
        self.earlier_seconds = 0.0
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        return self.earlier_seconds + time.perf_counter() - self.started

    def optimize(self, model: onnx.ModelProto) -> Task[onnx.ModelProto]:
        from slimscope.core.optimize import iter_optimize

        source = replace(self.loaded, model=model)
        result = yield from iter_optimize(source, self.recipe, self.calibration)
        return result.model

    def use_checkpoints(self, folder: Path, resume: bool) -> None:
        key = checkpoints.run_key(
            _model_fingerprint(self.loaded.model),
            str(self.recipe.to_dict()),
            self.train_data.fingerprint(),
            self.val.fingerprint(),
        )
        self.checkpoint = checkpoints.checkpoint_path(folder, key)
        checkpoints.check_target(self.checkpoint, [self.loaded.source, *self.loaded.external_files])
        if resume:
            self.saved = checkpoints.load_checkpoint(self.checkpoint)
            if self.saved is None:
                self.notes.append(f"No checkpoint of this run in '{folder}'; retraining started afresh.")

    def train(self, blocks: list[Block]) -> Task[onnx.ModelProto]:
        from slimscope.core.train.onnx_module import to_torch

        self.started = time.perf_counter()
        first_block, first_epoch = self._resume_point()
        float_module = to_torch(self.loaded.model)
        if self.saved is not None:
            float_module.load_state_dict(self.saved.get("float_state") or self.saved["module"])
        total = sum(block.epochs for block in blocks)
        done = sum(block.epochs for block in blocks[:first_block]) + first_epoch
        trainer = Trainer(self, float_module, blocks, total, done)
        model: onnx.ModelProto | None = None
        for index in range(first_block, len(blocks)):
            block = blocks[index]
            if block.phase == "qat" and trainer.phase != "qat":
                float_state = trainer.module.state_dict()
                yield Progress(trainer.progress(), "Quantizing the fine-tuned model")
                quantized = yield from scaled(self.optimize(trainer.module.write_back()), 0, 0, None)
                trainer.start_qat(quantized, float_state)
            start = first_epoch if index == first_block else 0
            yield from trainer.run_block(index, block, start, self.saved if index == first_block else None)
        if trainer.phase == "qat":
            model = trainer.module.write_back()
            self.simulated_accuracy = trainer.validate()
        else:
            yield Progress(trainer.progress(), "Applying the recipe to the fine-tuned model")
            model = yield from scaled(self.optimize(trainer.module.write_back()), 0.9, 0.97, None)
        return model

    def _resume_point(self) -> tuple[int, int]:
        if self.saved is None:
            return 0, 0
        self.resumed = True
        self.earlier_seconds = float(self.saved.get("elapsed", 0.0))
        self.history = [TrainingEvent(**event) for event in self.saved.get("history", [])]
        return int(self.saved["block"]), int(self.saved["epoch"])

    def save(self, state: dict[str, Any]) -> None:
        if self.checkpoint is not None:
            history = [asdict(event) for event in self.history]
            checkpoints.save_checkpoint(
                self.checkpoint, {**state, "history": history, "elapsed": self.elapsed()}
            )


def _model_fingerprint(model: onnx.ModelProto) -> str:
    import hashlib

    return hashlib.blake2b(model.SerializeToString(), digest_size=16).hexdigest()
