"""One sensitivity probe: a single layer optimized with one setting, the rest float, compared with the float
model's outputs computed once beforehand.

This is the part that runs in worker processes (see core/executor.py): everything it takes and returns is
plain, picklable data, and `setup_probe_worker` turns the payload a worker receives once (the model as
serialized bytes, the samples, the float outputs) into the state every probe of that worker shares —
including one `OptimizeCache`, so calibration runs once per worker and every quantization probe after
the first reuses its ranges.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from slimscope.core.errors import (
    CancelledError,
    OptimizeError,
    QuantizationError,
    RecipeError,
    WorkerCrashError,
)
from slimscope.core.evaluate.metrics import OutputComparison
from slimscope.core.evaluate.sessions import batch_step, batches, create_runner
from slimscope.core.model import LoadedModel
from slimscope.core.optimize import OptimizeCache, OptimizeResult, iter_optimize
from slimscope.core.quantize.calibration import model_digest
from slimscope.core.recipe import LayerSettings, PruneSpec, QuantSpec, Recipe
from slimscope.core.tasks import Progress, Task, run_sync

_COMPARED_KEPT = 256  # comparisons are a few numbers each


@dataclass(frozen=True)
class ProbeSetting:
    """One way to optimize a layer in a sweep: `key` names it on the command line, `label` in tables."""

    key: str
    label: str
    prune: PruneSpec | None = None
    quantize: QuantSpec | None = None

    def recipe_for(self, layer: str) -> Recipe:
        """Everything float, except `layer` with this setting."""
        return Recipe(defaults=LayerSettings(None, None)).with_layer(
            layer, prune=self.prune, quantize=self.quantize
        )

    @property
    def cost_rank(self) -> int:
        """Cheap settings run first so that results arrive early: masks, then channels, then quantization
        (whose first probe per worker calibrates)."""
        if self.quantize is not None:
            return 2
        return 1 if self.prune is not None and self.prune.structure == "channel" else 0


DEFAULT_SETTINGS: tuple[ProbeSetting, ...] = (
    ProbeSetting("int8", "int8", quantize=QuantSpec()),
    ProbeSetting("int4", "int4 weights", quantize=QuantSpec(weight_bits=4)),
    ProbeSetting("sparse50", "50% sparsity", prune=PruneSpec(sparsity=0.5)),
    ProbeSetting("sparse80", "80% sparsity", prune=PruneSpec(sparsity=0.8)),
    ProbeSetting("channels30", "channels 30%", prune=PruneSpec(structure="channel", sparsity=0.3)),
)


def probe_settings(names: str | Sequence[str | ProbeSetting] | None) -> tuple[ProbeSetting, ...]:
    """Settings by key ("int8,int4" or a list of keys and/or ProbeSetting objects); None: the defaults."""
    if names is None:
        return DEFAULT_SETTINGS
    if isinstance(names, str):
        names = [name.strip() for name in names.split(",") if name.strip()]
    known = {setting.key: setting for setting in DEFAULT_SETTINGS}
    chosen: list[ProbeSetting] = []
    for name in names:
        if isinstance(name, ProbeSetting):
            chosen.append(name)
        elif name in known:
            chosen.append(known[name])
        else:
            raise RecipeError(f"Unknown sensitivity setting {name!r} (known: {', '.join(known)}).")
    if not chosen:
        raise RecipeError(f"No sensitivity settings were given (known: {', '.join(known)}).")
    return tuple(dict.fromkeys(chosen))  # drops repeats, keeps order


@dataclass(frozen=True)
class ProbeTask:
    layer: str
    setting: ProbeSetting
    samples: int  # compare on the first `samples` samples


@dataclass(frozen=True)
class ProbeOutcome:
    """What one probe measured (plain data, so it crosses process boundaries and sits in caches)."""

    layer: str
    setting: ProbeSetting
    samples: int
    applied: bool  # False: the setting could not be applied to this layer (`note` says why)
    form: str  # what was done to the layer, in words
    sqnr_db: float | None  # of the model outputs; inf when unchanged
    agreement: float | None  # top-1 agreement with the float model; None when not a classifier
    accuracy: dict[str, float] | None  # {"original", "optimized"} on the same samples; None without labels
    note: str | None = None


@dataclass
class ProbeState:
    """What every probe of one process shares."""

    loaded: LoadedModel
    x: np.ndarray  # model-ready samples (the most any probe compares on)
    y: np.ndarray | None
    reference: list[np.ndarray]  # the float model's outputs for `x`, batch first
    calibration: np.ndarray | None
    threads: int = 0  # onnxruntime intra-op threads per probe session (0: its choice)
    cache: OptimizeCache = field(default_factory=OptimizeCache)
    # Comparisons by (optimized model digest, samples): probing any layer of one channel group prunes the
    # same channels and so makes the same model; it is measured once.
    compared: OrderedDict[tuple[str, int], OutputComparison] = field(default_factory=OrderedDict)


def reference_outputs(model: onnx.ModelProto, x: np.ndarray, threads: int = 0) -> list[np.ndarray]:
    """The float model's outputs for `x`, computed once per sweep and compared against by every probe."""
    runner = create_runner(model, "original", threads)
    parts = [runner.run_all(batch) for _, batch in batches(x, batch_step([runner]))]
    return [np.concatenate(outputs) for outputs in zip(*parts, strict=True)]


def probe_payload(state: ProbeState) -> dict[str, Any]:
    """The state as plain data for `setup_probe_worker`: the model as serialized bytes."""
    loaded = state.loaded
    return {
        "model": loaded.model.SerializeToString(),
        "source": str(loaded.source),
        "format": loaded.format,
        "file_size": loaded.file_size,
        "x": np.asarray(state.x),
        "y": None if state.y is None else np.asarray(state.y),
        "reference": state.reference,
        "calibration": state.calibration,
        "threads": state.threads,
    }


def setup_probe_worker(payload: dict[str, Any]) -> ProbeState:
    """A worker's state from `probe_payload` (runs once per worker)."""
    model = onnx.load_model_from_string(payload["model"])
    loaded = LoadedModel(model, Path(payload["source"]), payload["format"], payload["file_size"])
    return ProbeState(
        loaded,
        payload["x"],
        payload["y"],
        payload["reference"],
        payload["calibration"],
        payload["threads"],
    )


def run_probe(state: ProbeState, task: ProbeTask) -> ProbeOutcome:
    """`iter_probe` to its end: what a worker runs per item."""
    return run_sync(iter_probe(state, task))


def iter_probe(state: ProbeState, task: ProbeTask) -> Task[ProbeOutcome]:
    """Optimize one layer with one setting and compare the outputs on the first `task.samples` samples."""
    recipe = task.setting.recipe_for(task.layer)
    try:
        result = yield from iter_optimize(state.loaded, recipe, state.calibration, cache=state.cache)
    except (WorkerCrashError, CancelledError):
        raise
    except (OptimizeError, QuantizationError) as exc:  # this one probe is skipped; the sweep goes on
        comparison = _compare(state, None, task.samples)
        skipped = f"Skipped, {task.setting.label} could not be applied to this layer: {exc}"
        return _outcome(task, False, "float", comparison, state.y is not None, skipped)
    form = result.forms.get(task.layer, "float")
    applied, note = _applied(result, task)
    if not applied:  # nothing changed: the float outputs compared with themselves, no model run
        comparison = _compare(state, None, task.samples)
        return _outcome(task, False, form, comparison, state.y is not None, note)
    yield Progress(None, f"Measuring {task.layer} ({task.setting.label})")
    if task.setting.cost_rank != 1:  # only channel pruning makes one model from several layers' probes
        comparison = _compare(state, result.model, task.samples)
        return _outcome(task, True, form, comparison, state.y is not None, note)
    key = (model_digest(result.model), task.samples)
    comparison = state.compared.get(key) or _compare(state, result.model, task.samples)
    state.compared[key] = comparison
    while len(state.compared) > _COMPARED_KEPT:
        state.compared.popitem(last=False)
    return _outcome(task, True, form, comparison, state.y is not None, note)


def _outcome(
    task: ProbeTask, applied: bool, form: str, comparison: OutputComparison, labelled: bool, note: str | None
) -> ProbeOutcome:
    return ProbeOutcome(
        task.layer,
        task.setting,
        task.samples,
        applied,
        form,
        comparison.sqnr_db(),
        comparison.agreement(),
        comparison.accuracy(labelled),
        note,
    )


def _compare(state: ProbeState, model: onnx.ModelProto | None, samples: int) -> OutputComparison:
    """The probed model's outputs against the float ones (against themselves when `model` is None)."""
    runner = None if model is None else create_runner(model, "probed", state.threads)
    comparison = OutputComparison()
    step = batch_step([runner]) if runner is not None else samples
    for start, batch in batches(state.x[:samples], step):
        reference = [output[start : start + len(batch)] for output in state.reference]
        labels = None if state.y is None else state.y[start : start + len(batch)]
        comparison.add(reference, reference if runner is None else runner.run_all(batch), labels)
    return comparison


def _applied(result: OptimizeResult, task: ProbeTask) -> tuple[bool, str | None]:
    """Whether the setting changed the layer, and the optimizer's note when it did not."""
    name, setting = task.layer, task.setting
    if setting.prune is not None:
        if setting.prune.structure == "channel":
            changed = result.channels_removed.get(name, 0.0) > 0
        else:
            changed = result.sparsity.get(name, 0.0) > 0
    else:
        changed = not result.forms.get(name, "float").endswith("float")
    if changed:
        return True, None
    quoted = repr(name)
    notes = [note for note in result.notes if quoted in note] or result.notes
    return False, notes[0] if notes else "The setting does not apply to this layer."
