"""`Analysis`: sensitivity sweeps, automatic recipes and retraining, run in a child process of their own.

Its own `TaskProcess` (not the live comparison's) so that a sweep of minutes does not stop the comparison
of each recipe edit, and an edit does not stop the sweep. One job at a time here too: a newer sweep or
automatic recipe cancels the running one (`TaskRunner`). The child keeps a `SensitivityCache` per model,
so a repeat sweep — or the automatic recipe's own sweep after one in the panel — is measured once.
Retraining (`run_finetune`) streams its baseline and training events, and its result becomes the Session's
`retrained` when the recipe it trained to is still the Session's.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from PySide6.QtCore import QObject, Signal

from slimscope.core.auto_recipe import AutoResult, Goal
from slimscope.core.comparison import COMPARISON_SAMPLES, Comparison
from slimscope.core.recipe import Recipe
from slimscope.core.sensitivity import DEFAULT_MAX_SAMPLES, SensitivityReport
from slimscope.core.session import Session
from slimscope.core.task_process import TaskProcess
from slimscope.core.tasks import Progress, Task
from slimscope.core.train.finetune import FinetuneBaseline, FinetuneResult, TrainingEvent
from slimscope.gui.task_runner import TaskRunner

SENSITIVITY, AUTO, FINETUNE = "sensitivity", "auto", "finetune"  # the jobs, as `Analysis.job` names them


class Analysis(QObject):
    """Signals arrive on the main thread; `job` says which job the running state and progress are of."""

    progressed = Signal(str, object)  # job, Progress
    report_changed = Signal(object)  # SensitivityReport: partial ones as they stream, then the complete one
    candidate_verified = Signal(object)  # Comparison of one automatic-recipe candidate
    auto_finished = Signal(object)  # AutoResult
    training_progressed = Signal(object)  # FinetuneBaseline first, then TrainingEvents
    finetune_finished = Signal(object)  # FinetuneResult
    failed = Signal(str, object)  # job, the exception
    running_changed = Signal(bool)

    def __init__(self, session: Session, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session = session
        self.process = TaskProcess("slimscope-analysis")
        self.runner = TaskRunner(self)
        self.job: str | None = None  # the job started last (kept after it ends, so receivers can tell)
        self.finetune_recipe: Recipe | None = None  # the recipe the latest retraining trains to
        self.runner.progressed.connect(self._on_progress)
        self.runner.returned.connect(self._on_returned)
        self.runner.failed.connect(lambda _generation, exc: self.failed.emit(self.job or "", exc))
        self.runner.running_changed.connect(self.running_changed)
        session.model_changed.connect(self.set_model)
        session.data_changed.connect(self._on_data_changed)

    @property
    def running(self) -> bool:
        return self.runner.running

    @property
    def ready(self) -> bool:
        """A model and evaluation data: what both jobs need."""
        return self.session.loaded is not None and self.session.evaluation_data is not None

    def set_model(self, *_args: object) -> None:
        """The open model changed: stop the running job; the next one works on the new model."""
        self.cancel()
        self.process.set_model(self.session.loaded)

    def run_sensitivity(
        self, settings: Iterable[str], max_samples: int = DEFAULT_MAX_SAMPLES, ray_address: str | None = None
    ) -> bool:
        """Sweep every layer with each setting key ("int8", "int4", …), on this computer or on the Ray
        cluster at `ray_address`; False when nothing can run."""
        keys = ",".join(settings)
        if not self.ready or not keys:
            return False
        session = self.session
        self._start(SENSITIVITY, self.process.run(
            SENSITIVITY, session.evaluation_data, session.calibration_data, self._preprocess(), keys,
            max_samples, ray_address or None,
        ))  # fmt: skip
        return True

    def run_auto(self, max_drop: float, goal: Goal, max_samples: int = COMPARISON_SAMPLES) -> bool:
        """An automatic recipe within `max_drop` (a fraction); False when nothing can run. Evaluated on as
        many samples as the live comparison, so its candidates and the history's points compare."""
        if not self.ready:
            return False
        session = self.session
        self._start(AUTO, self.process.run(
            AUTO, session.evaluation_data, session.calibration_data, self._preprocess(), max_drop, goal,
            session.recipe, max_samples,
        ))  # fmt: skip
        return True

    def run_finetune(
        self,
        train: Path,
        val: Path | None,
        checkpoint_dir: Path | None,
        resume: bool,
        recipe: Recipe | None = None,
    ) -> bool:
        """Retrain the open model to `recipe` (default: the Session's) on labelled `train` data, validated
        on `val` (None: split off by the recipe's val_fraction), calibrated on the Session's calibration data
        (None: core takes training samples); checkpoints in `checkpoint_dir`, resumed from there when
        `resume`. False when nothing can run (no model)."""
        recipe = recipe or self.session.recipe
        if self.session.loaded is None or recipe is None:
            return False
        self.finetune_recipe = recipe
        self._start(FINETUNE, self.process.run(
            FINETUNE, recipe, Path(train), None if val is None else Path(val), self.session.calibration_data,
            None if checkpoint_dir is None else Path(checkpoint_dir), resume,
        ))  # fmt: skip
        return True

    def _on_data_changed(self) -> None:
        """Other evaluation data: a sweep's or search's running numbers would be stale. Retraining has data
        of its own (its calibration data was read when it started), so it goes on."""
        if self.job != FINETUNE:
            self.cancel()

    def cancel(self, *_args: object) -> None:
        """Stop the running job (the child stops at its next step); what it still sends is dropped."""
        self.runner.cancel()

    def shutdown(self) -> None:
        """Cancel and end the child process (the window is closing)."""
        self.cancel()
        self.process.close()

    def _preprocess(self) -> dict | None:
        recipe = self.session.recipe
        return None if recipe is None else recipe.data.get("preprocess")

    def _start(self, job: str, task: Task) -> None:
        self.runner.cancel()  # before `job` changes: the old job's running state ends under its own name
        self.job = job
        self.runner.start(task)

    def _on_progress(self, _generation: int, progress: Progress) -> None:
        partial = progress.partial
        if self.job == SENSITIVITY and isinstance(partial, SensitivityReport):
            self.report_changed.emit(partial)
        elif self.job == AUTO and isinstance(partial, Comparison):
            self.candidate_verified.emit(partial)
        elif self.job == FINETUNE and isinstance(partial, FinetuneBaseline | TrainingEvent):
            self.training_progressed.emit(partial)
        self.progressed.emit(self.job or "", progress)

    def _on_returned(self, _generation: int, result: object) -> None:
        if isinstance(result, SensitivityReport):
            self.report_changed.emit(result)
        elif isinstance(result, AutoResult):
            self.auto_finished.emit(result)
        elif isinstance(result, FinetuneResult):
            if self.finetune_recipe == self.session.recipe:  # else its numbers are of another recipe
                self.session.set_retrained(result)
            self.finetune_finished.emit(result)
