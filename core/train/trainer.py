"""Epochs of training on one module: the float one through the pruning steps, then the quantized one for
QAT (`Trainer`); the events the live curves draw (`TrainingEvent`). `finetune.iter_finetune` plans the
blocks of epochs and owns the run (checkpoints, baseline, result); this module trains."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from slimscope.core.errors import TrainingError
from slimscope.core.tasks import Progress, Task
from slimscope.core.train.prune_masks import step_masks

if TYPE_CHECKING:
    from slimscope.core.train.finetune import _Run

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
class Block:
    phase: str
    step: int
    epochs: int
    fraction: float
    final: bool  # early stop and keep the best weights


class Trainer:
    """Runs blocks of epochs on one module (the float one, then the quantized one for QAT)."""

    def __init__(self, run: _Run, module, blocks: list[Block], total: int, done: int) -> None:
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

    def run_block(self, index: int, block: Block, start: int, saved: dict[str, Any] | None) -> Task[None]:
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

    def _epoch(self, block: Block, epoch: int, base_lr: float) -> Task[float]:
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

    def _lr(self, base: float, block: Block, epoch: int, batch: int) -> float:
        if self.run.spec.lr_schedule == "constant":
            return base
        per_epoch = self._batches_per_epoch()
        t = (epoch * per_epoch + batch) / max(block.epochs * per_epoch, 1)
        return base * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))

    def _apply_step_masks(self, block: Block) -> None:
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

    def _prune_blocks(self) -> list[Block]:
        return [block for block in self.blocks if block.phase == "prune"]

    def _event(
        self, block: Block, epoch: int, loss: float, accuracy: float | None, lr: float
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
