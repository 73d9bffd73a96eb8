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

import math
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
from slimscope.core.train.prune_masks import PruneTargets, prune_targets, step_masks
from slimscope.core.train.train_data import TrainingData
from slimscope.core.train.train_spec import TrainSpec, sparsity_fraction

LOSS_EVERY = 10  # batches between running-loss events (the live curve)


@dataclass(frozen=True)
class TrainingEvent:
    """One point of the live curves: a running loss, or an epoch's end with its validation accuracy."""

    phase: str  # "prune" (pruning steps and fine-tuning) or "qat"
    step: int  # pruning step, 1-based (QAT: 0)
    steps: int
    epoch: int  # epochs done in this step (a running-loss event: the epoch under way)
    fraction: float  # fraction of the recipe's pruning targets applied
    train_loss: float
    val_accuracy: float | None  # None for a running-loss event
    learning_rate: float
    seconds: float  # since retraining started (a resumed run counts its earlier time)


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


@dataclass(frozen=True)
class _Block:
    phase: str
    step: int
    epochs: int
    fraction: float
    final: bool  # early stop and keep the best weights


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


def _plan_blocks(spec: TrainSpec, targets: PruneTargets, quantizes: bool) -> list[_Block]:
    blocks = []
    if targets:
        for step in range(1, spec.steps + 1):
            last = step == spec.steps
            epochs = spec.final_epochs if last else spec.epochs_per_step
            blocks.append(
                _Block("prune", step, epochs, sparsity_fraction(spec.schedule, step, spec.steps), last)
            )
    if quantizes and spec.qat.epochs > 0:
        blocks.append(_Block("qat", 0, spec.qat.epochs, 1.0, True))
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

    def train(self, blocks: list[_Block]) -> Task[onnx.ModelProto]:
        from slimscope.core.train.onnx_module import to_torch

        self.started = time.perf_counter()
        first_block, first_epoch = self._resume_point()
        float_module = to_torch(self.loaded.model)
        if self.saved is not None:
            float_module.load_state_dict(self.saved.get("float_state") or self.saved["module"])
        total = sum(block.epochs for block in blocks)
        done = sum(block.epochs for block in blocks[:first_block]) + first_epoch
        trainer = _Trainer(self, float_module, blocks, total, done)
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


class _Trainer:
    """Runs blocks of epochs on one module (the float one, then the quantized one for QAT)."""

    def __init__(self, run: _Run, module, blocks: list[_Block], total: int, done: int) -> None:
        self.run, self.module, self.blocks = run, module, blocks
        self.phase = "prune"
        self.masks: dict[str, Any] = {}
        self.float_state: dict[str, Any] | None = None
        self.total, self.done = max(total, 1), done
        self.loss = _loss_for(run.loaded.model)
        self.optimizer = self._optimizer(run.spec.learning_rate)
        if run.saved is not None and run.saved.get("float_state") is not None:
            self.float_state = run.saved["float_state"]

    def progress(self) -> float:
        return 0.1 + 0.8 * self.done / self.total

    def start_qat(self, quantized: onnx.ModelProto, float_state: dict[str, Any]) -> None:
        """Switch to the quantized model; pruned weights stay zero through QAT."""
        import torch

        from slimscope.core.train.onnx_module import to_torch

        self.phase, self.float_state = "qat", float_state
        self.module = to_torch(quantized, learn_ranges=self.run.spec.qat.ranges == "learned")
        self.masks = {}
        if self.run.targets.masks:
            for name, param in self.module.trainable.items():
                zero = param.detach() == 0
                if param.dim() > 1 and bool(zero.any()):
                    self.masks[name] = (~zero).to(torch.float32)
        self.optimizer = self._optimizer(self.run.spec.qat.learning_rate)

    def run_block(self, index: int, block: _Block, start: int, saved: dict[str, Any] | None) -> Task[None]:
        spec = self.run.spec
        base_lr = spec.qat.learning_rate if block.phase == "qat" else spec.learning_rate
        best: dict[str, Any] | None = None
        since_best = 0
        if saved is not None and start > 0 or (saved is not None and saved.get("masks_applied")):
            self._restore(saved)
            best, since_best = saved.get("best"), int(saved.get("since_best", 0))
        elif block.phase == "prune":
            yield Progress(self.progress(), f"Pruning step {block.step} of {len(self._prune_blocks())}")
            self._apply_step_masks(block)
            self.run.save(self._state(index, 0, None, 0, masks_applied=True))
        for epoch in range(start, block.epochs):
            loss = yield from self._epoch(block, epoch, base_lr)
            accuracy = self.validate()
            self.done += 1
            event = self._event(block, epoch + 1, loss, accuracy, self._lr(base_lr, block, epoch + 1, 0))
            self.run.history.append(event)
            yield Progress(self.progress(), _describe(event), event)
            if block.final:
                if best is None or accuracy > best["accuracy"]:
                    best, since_best = {"accuracy": accuracy, "state": _copy_state(self.module)}, 0
                else:
                    since_best += 1
            self.run.save(self._state(index, epoch + 1, best, since_best, masks_applied=True))
            if block.final and since_best >= spec.patience and epoch + 1 < block.epochs:
                self.run.notes.append(
                    f"Stopped early after {epoch + 1} epochs: no better validation accuracy."
                )
                self.done += block.epochs - epoch - 1
                break
        if best is not None:
            self.module.load_state_dict(best["state"])
            self._apply_masks()

    def validate(self) -> float:
        import torch

        self.module.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in self.run.val.batches(self.run.spec.batch_size, shuffle=False):
                scores = self.module(torch.from_numpy(x)).reshape(len(x), -1)
                correct += int((scores.argmax(dim=1).numpy() == y).sum())
                total += len(x)
        return correct / max(total, 1)

    def _epoch(self, block: _Block, epoch: int, base_lr: float) -> Task[float]:
        import torch

        spec = self.run.spec
        self.module.train()
        torch.manual_seed(spec.seed + self.done)
        batches = self._batches_per_epoch()
        seed = spec.seed + 1000 * block.step + epoch + (500 if block.phase == "qat" else 0)
        augment = spec.augment
        running, count = 0.0, 0
        stream = self.run.train_data.batches(spec.batch_size, shuffle=True, seed=seed, augment=augment)
        for number, (x, y) in enumerate(stream):
            if number >= batches:
                break
            lr = self._lr(base_lr, block, epoch, number)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            scores = self.module(torch.from_numpy(x)).reshape(len(x), -1)
            loss = self.loss(scores, torch.from_numpy(y))
            if not torch.isfinite(loss):
                raise TrainingError("Training diverged (the loss is not finite); lower the learning rate.")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self._apply_masks()
            running, count = running + float(loss.detach()), count + 1
            if (number + 1) % LOSS_EVERY == 0:
                event = self._event(block, epoch, running / count, None, lr)
                fraction = self.progress() + 0.8 * (number + 1) / batches / self.total
                yield Progress(fraction, _describe(event, number + 1, batches), event)
        return running / max(count, 1)

    def _batches_per_epoch(self) -> int:
        spec = self.run.spec
        batches = math.ceil(len(self.run.train_data) / spec.batch_size)
        return min(batches, spec.max_batches_per_epoch or batches)

    def _lr(self, base: float, block: _Block, epoch: int, batch: int) -> float:
        if self.run.spec.lr_schedule == "constant":
            return base
        per_epoch = self._batches_per_epoch()
        t = (epoch * per_epoch + batch) / max(block.epochs * per_epoch, 1)
        return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))

    def _apply_step_masks(self, block: _Block) -> None:
        import torch

        keep = step_masks(self.module.write_back(), self.run.targets, block.fraction)
        params = self.module.trainable
        self.masks = {
            name: torch.from_numpy(mask.astype(np.float32)) for name, mask in keep.items() if name in params
        }
        self._apply_masks()

    def _apply_masks(self) -> None:
        import torch

        with torch.no_grad():
            for name, mask in self.masks.items():
                self.module.tensor(name).mul_(mask)

    def _optimizer(self, lr: float):
        """The weights' optimizer, as the recipe says; learned activation scales go to their own Adam
        (`_MultiOptimizer`): their LSQ-scaled gradients are ~1e-6 on a trained model (measured on the
        demo), so SGD at a weight's learning rate would not move them at all; Adam's steps do not scale
        with the gradient's size. No weight decay on scales."""
        import torch

        learned = self.module.learned_scales
        trainable = self.module.trainable
        weights = [p for name, p in trainable.items() if name not in learned]
        decay = self.run.spec.weight_decay
        if self.run.spec.optimizer == "adam":
            main: torch.optim.Optimizer = torch.optim.Adam(weights, lr=lr, weight_decay=decay)
        else:
            main = torch.optim.SGD(weights, lr=lr, momentum=0.9, nesterov=True, weight_decay=decay)
        if not learned:
            return main
        scales = torch.optim.Adam([p for name, p in trainable.items() if name in learned], lr=lr)
        return _MultiOptimizer(main, scales)

    def _prune_blocks(self) -> list[_Block]:
        return [block for block in self.blocks if block.phase == "prune"]

    def _event(
        self, block: _Block, epoch: int, loss: float, accuracy: float | None, lr: float
    ) -> TrainingEvent:
        steps = len(self._prune_blocks())
        return TrainingEvent(
            block.phase, block.step, steps, epoch, block.fraction, loss, accuracy, lr, self.run.elapsed()
        )

    def _state(self, block: int, epoch: int, best, since_best: int, masks_applied: bool) -> dict[str, Any]:
        return {
            "block": block,
            "epoch": epoch,
            "module": self.module.state_dict(),
            "masks": dict(self.masks),
            "optimizer": self.optimizer.state_dict(),
            "best": best,
            "since_best": since_best,
            "masks_applied": masks_applied,
            "float_state": self.float_state,
        }

    def _restore(self, saved: dict[str, Any]) -> None:
        self.module.load_state_dict(saved["module"])
        self.masks = dict(saved.get("masks") or {})
        self.optimizer.load_state_dict(saved["optimizer"])
        self._apply_masks()


class _MultiOptimizer:
    """Two optimizers stepped together, with one state dict (for checkpoints)."""

    def __init__(self, *optimizers) -> None:
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [optimizer.state_dict() for optimizer in self.optimizers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for optimizer, saved in zip(self.optimizers, state["optimizers"], strict=True):
            optimizer.load_state_dict(saved)


def _loss_for(model: onnx.ModelProto):
    """Cross-entropy on logits; on probabilities when the model ends in Softmax (log taken first)."""
    import torch
    from torch.nn import functional as F

    output = model.graph.output[0].name
    producer = next((node for node in model.graph.node if output in node.output), None)
    if producer is not None and producer.op_type == "Softmax":
        return lambda p, y: F.nll_loss(torch.log(p.clamp_min(1e-12)), y)
    return F.cross_entropy


def _copy_state(module) -> dict[str, Any]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def _describe(event: TrainingEvent, batch: int | None = None, batches: int | None = None) -> str:
    where = (
        "QAT" if event.phase == "qat" else f"Step {event.step}/{event.steps} ({event.fraction:.0%} of target)"
    )
    if batch is not None:
        return f"{where} · epoch {event.epoch + 1} · batch {batch}/{batches} · loss {event.train_loss:.3f}"
    return (
        f"{where} · epoch {event.epoch} · loss {event.train_loss:.3f} · validation {event.val_accuracy:.2%}"
    )


def _model_fingerprint(model: onnx.ModelProto) -> str:
    import hashlib

    return hashlib.blake2b(model.SerializeToString(), digest_size=16).hexdigest()
