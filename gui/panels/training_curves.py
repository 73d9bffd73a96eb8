"""`TrainingCurves`: retraining's live curves — training loss above, validation accuracy below.

Points come from core's `TrainingEvent`s: a running loss every few batches, and at each epoch's end the
epoch's loss and its validation accuracy. Against elapsed seconds or epochs (the x axes are linked). The
dense and post-training accuracies (`FinetuneBaseline`) are dashed horizontal lines, so the accuracy the
retraining recovers is read against them; dotted vertical lines mark where each pruning step (and QAT)
starts. Every plot item is made once and updated in place, at most ~20 times a second.
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from slimscope.core.train.finetune import FinetuneBaseline, TrainingEvent
from slimscope.core.train.train_spec import TrainSpec

REDRAW_MS = 50
X_AXES = ("elapsed seconds", "epochs")
# Fixed colours that read on the light and the dark plot background alike (gui.theme sets the rest).
LOSS_COLOUR = "#2b7fd0"
ACCURACY_COLOUR = "#1b9e77"
DENSE_COLOUR = "#8c8c8c"
POST_TRAINING_COLOUR = "#d95f02"
STEP_COLOUR = "#8e6cc0"
_DASH, _DOT = Qt.PenStyle.DashLine, Qt.PenStyle.DotLine
# Step labels run up along their line, just right of it: markers close together do not overprint.
STEP_LABEL = {"position": 0.5, "color": STEP_COLOUR, "rotateAxis": (1, 0), "anchors": [(0.5, 0), (0.5, 0)]}


def planned_epochs_before(event: TrainingEvent, spec: TrainSpec) -> int:
    """Epochs the schedule runs before `event`'s epoch: where a resumed run's first point goes."""
    prune_epochs = (event.steps - 1) * spec.epochs_per_step + spec.final_epochs if event.steps else 0
    block_start = prune_epochs if event.phase == "qat" else (event.step - 1) * spec.epochs_per_step
    under_way = event.epoch if event.val_accuracy is None else event.epoch - 1
    return block_start + under_way


def epoch_positions(events: list[TrainingEvent], start: float = 0.0) -> list[float]:
    """Each event's x in epochs: an epoch's end at the count of epochs done, its running-loss points
    spread evenly inside it (they come every few batches, so evenly in batches too)."""
    xs = [0.0] * len(events)
    done, per_epoch = start, 0
    pending: list[int] = []  # the running points of the epoch under way
    for index, event in enumerate(events):
        if event.val_accuracy is None:
            pending.append(index)
            continue
        _spread(xs, pending, done, len(pending))
        per_epoch = max(per_epoch, len(pending))
        done += 1
        xs[index] = done
        pending = []
    _spread(xs, pending, done, max(per_epoch, len(pending)))
    return xs


def _spread(xs: list[float], indices: list[int], base: float, count: int) -> None:
    for order, index in enumerate(indices):
        xs[index] = base + (order + 1) / (count + 1)


def block_starts(events: list[TrainingEvent], xs: list[float], origin: float) -> list[tuple[float, str]]:
    """(x, label) where each pruning step or QAT starts: where the block before it ended; the first at
    `origin`, where the run started (a resumed run: where it resumed)."""
    starts: list[tuple[float, str]] = []
    for index, event in enumerate(events):
        previous = events[index - 1] if index else None
        if previous is not None and (event.phase, event.step) == (previous.phase, previous.step):
            continue
        label = (
            "QAT" if event.phase == "qat" else f"step {event.step} · {100 * event.fraction:.0f} % of target"
        )
        starts.append((xs[index - 1] if index else origin, label))
    return starts


class TrainingCurves(QWidget):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.events: list[TrainingEvent] = []
        self.baseline: FinetuneBaseline | None = None
        self.spec = TrainSpec()  # the schedule of the run shown: places a resumed run's epochs
        self.x_axis = QComboBox()
        self.x_axis.addItems(X_AXES)
        self.x_axis.setToolTip("Plot against the time since retraining started, or against epochs")
        self.loss_plot = pg.PlotWidget()  # colours: gui.theme (pyqtgraph config)
        self.accuracy_plot = pg.PlotWidget()
        self.accuracy_plot.setXLink(self.loss_plot)
        self.loss_plot.setLabel("left", "training loss")
        self.loss_plot.getAxis("left").enableAutoSIPrefix(False)  # "0.05", not "50 (x0.001)"
        self.accuracy_plot.setLabel("left", "validation accuracy", units="%")
        for plot in (self.loss_plot, self.accuracy_plot):
            plot.showGrid(x=True, y=True, alpha=0.2)
            plot.setMouseEnabled(y=False)
        self.running_loss = pg.PlotDataItem(pen=pg.mkPen(LOSS_COLOUR, width=1.5))
        self.epoch_loss = pg.PlotDataItem(pen=None, symbol="o", symbolSize=7, symbolBrush=LOSS_COLOUR)
        self.accuracy = pg.PlotDataItem(
            pen=pg.mkPen(ACCURACY_COLOUR, width=2), symbol="o", symbolSize=7, symbolBrush=ACCURACY_COLOUR
        )
        # Invisible: stretches the linked x range back to where the run started (the first marker).
        self.loss_span = pg.PlotDataItem(
            pen=pg.mkPen(0, 0, 0, 0)
        )  # a transparent pen: pen=None has no bounds
        self.loss_plot.addItem(self.loss_span)
        self.dense = pg.PlotDataItem(pen=pg.mkPen(DENSE_COLOUR, width=1.5, style=_DASH))
        self.post_training = pg.PlotDataItem(pen=pg.mkPen(POST_TRAINING_COLOUR, width=1.5, style=_DASH))
        loss_legend = self.loss_plot.addLegend(offset=(-10, 10))
        for item, name in ((self.running_loss, "running (every 10 batches)"), (self.epoch_loss, "epoch")):
            self.loss_plot.addItem(item)
            loss_legend.addItem(item, name)
        accuracy_legend = self.accuracy_plot.addLegend(offset=(-10, -10))
        for item, name in (
            (self.accuracy, "retraining"),
            (self.dense, "dense"),
            (self.post_training, "post-training"),
        ):
            self.accuracy_plot.addItem(item)
            accuracy_legend.addItem(item, name)
        self.step_lines: list[tuple[pg.InfiniteLine, pg.InfiniteLine]] = []  # (loss, accuracy) pairs
        self.empty = QLabel("Curves appear when training starts.")
        self.redraw_timer = QTimer(self, singleShot=True, interval=REDRAW_MS)
        self.redraw_timer.timeout.connect(self.redraw)
        self.x_axis.currentIndexChanged.connect(self.redraw)
        row = QHBoxLayout()
        row.addWidget(self.empty, 1)
        row.addWidget(QLabel("x:"))
        row.addWidget(self.x_axis)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.loss_plot, 2)
        layout.addWidget(self.accuracy_plot, 3)
        self.redraw()

    @property
    def by_epoch(self) -> bool:
        return self.x_axis.currentIndex() == 1

    def clear(self, spec: TrainSpec | None = None) -> None:
        """No points (a new run, of `spec`'s schedule)."""
        self.events, self.baseline = [], None
        if spec is not None:
            self.spec = spec
        self.redraw()

    def set_baseline(self, baseline: FinetuneBaseline) -> None:
        self.baseline = baseline
        self.redraw_timer.start()

    def add_event(self, event: TrainingEvent) -> None:
        self.events.append(event)
        if not self.redraw_timer.isActive():
            self.redraw_timer.start()

    def redraw(self) -> None:
        events = self.events
        before = planned_epochs_before(events[0], self.spec) if events else 0
        if self.by_epoch:
            xs, origin = epoch_positions(events, before), float(before)
        else:  # a fresh run starts at 0 s; a resumed one (epochs before its first point) at that point
            xs = [event.seconds for event in events]
            origin = 0.0 if before == 0 or not events else events[0].seconds
        running = [(x, e.train_loss) for x, e in zip(xs, events, strict=True) if e.val_accuracy is None]
        ends = [(x, e) for x, e in zip(xs, events, strict=True) if e.val_accuracy is not None]
        self.running_loss.setData([x for x, _ in running], [loss for _, loss in running])
        self.epoch_loss.setData([x for x, _ in ends], [e.train_loss for _, e in ends])
        self.accuracy.setData([x for x, _ in ends], [100 * (e.val_accuracy or 0.0) for _, e in ends])
        span = [min([origin, *xs]), max(xs, default=1.0)]  # from the start: the first marker shows
        if span[1] <= span[0]:
            span[1] = span[0] + 1.0
        for item, value in (
            (self.dense, None if self.baseline is None else self.baseline.dense_accuracy),
            (self.post_training, None if self.baseline is None else self.baseline.post_training_accuracy),
        ):
            item.setData([] if value is None else span, [] if value is None else [100 * value] * 2)
        starts = block_starts(events, xs, origin)
        if starts and before:
            starts[0] = (origin, f"resumed · {starts[0][1]}")
        self._show_steps(starts)
        self.loss_span.setData(span if events else [], [events[0].train_loss] * 2 if events else [])
        self.accuracy_plot.setLabel(
            "bottom", "epochs" if self.by_epoch else "seconds since retraining started"
        )
        self.empty.setText("" if events or self.baseline else "Curves appear when training starts.")

    def _show_steps(self, starts: list[tuple[float, str]]) -> None:
        """A dotted vertical line per block start, made when first needed and reused after."""
        while len(self.step_lines) < len(starts):
            pen = pg.mkPen(STEP_COLOUR, width=1, style=_DOT)
            pair = (
                pg.InfiniteLine(angle=90, pen=pen),
                pg.InfiniteLine(angle=90, pen=pen, label="", labelOpts=STEP_LABEL),
            )
            self.loss_plot.addItem(pair[0], ignoreBounds=True)
            self.accuracy_plot.addItem(pair[1], ignoreBounds=True)
            self.step_lines.append(pair)
        for index, (loss_line, accuracy_line) in enumerate(self.step_lines):
            shown = index < len(starts)
            loss_line.setVisible(shown)
            accuracy_line.setVisible(shown)
            if shown:
                x, label = starts[index]
                loss_line.setPos(x)
                accuracy_line.setPos(x)
                accuracy_line.label.setFormat(label)
