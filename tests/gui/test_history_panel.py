"""The history plot: one point per evaluated recipe at core's own numbers, a re-evaluated recipe replaces its
point, clicking a point goes back to its recipe (undoably in the window), a model change clears it."""

from dataclasses import replace

import pytest
from PySide6.QtCore import QPoint, Qt

from slimscope.core.comparison import Comparison, iter_compare
from slimscope.core.evaluate import LatencyComparison, measure_latency
from slimscope.core.history import History, recipe_summary
from slimscope.core.optimize import OptimizeCache
from slimscope.core.recipe import PruneSpec, QuantSpec
from slimscope.core.session import Session
from slimscope.core.tasks import run_sync
from slimscope.gui.panels.history_panel import ORIGINAL, HistoryPanel
from slimscope.resources import DEMO_MODEL

SAMPLES = 100
JOB_TIMEOUT = 30_000


def compare(session: Session, recipe, cache: OptimizeCache) -> Comparison:
    """Core's comparison, without latency (it is added explicitly where a test needs it)."""
    task = iter_compare(
        session.loaded,
        recipe,
        session.evaluation_data,
        session.calibration_data,
        cache=cache,
        max_samples=SAMPLES,
    )
    result = run_sync(task)
    return replace(result, report=replace(result.report, latency_ms=None))


def with_latency(session: Session, comparison: Comparison) -> Comparison:
    """The same comparison with both models really timed at one thread by core."""
    models = {"original": session.loaded.model, "optimized": comparison.optimized.model}
    stats = measure_latency(models, threads=1, runs=10, warmup=2)
    row = LatencyComparison(1, stats["original"], stats["optimized"])
    return replace(comparison, report=replace(comparison.report, latency_ms=(row,)))


@pytest.fixture(scope="module")
def comparisons(demo_report):
    """Three recipes on the demo model: the template, heavy pruning only (accuracy drops), int4 only."""
    session = Session()
    session.set_model(demo_report)
    template, cache = session.recipe, OptimizeCache()
    pruned = template.with_defaults(prune=PruneSpec(sparsity=0.8), quantize=None)
    int4 = template.with_defaults(prune=None, quantize=QuantSpec(weight_bits=4))
    return {
        name: compare(session, r, cache)
        for name, r in (("template", template), ("pruned", pruned), ("int4", int4))
    }


@pytest.fixture
def session(demo_report):
    session = Session()
    session.set_model(demo_report)
    return session


@pytest.fixture
def panel(qtbot, session):
    widget = HistoryPanel(session)
    qtbot.addWidget(widget)
    widget.resize(500, 700)
    widget.show()
    return widget


def spots(plot):
    """(x, y, data) of each spot drawn, the original's star included."""
    return [(spot.pos().x(), spot.pos().y(), spot.data()) for spot in plot.scatter.points()]


def flat(pairs):
    """Coordinates in one flat list, for pytest.approx (which does not compare nested sequences)."""
    return [value for pair in pairs for value in pair[:2]]


def recipe_spots(plot):
    return [spot for spot in plot.scatter.points() if spot.data() is not ORIGINAL]


def test_two_recipes_are_two_points_at_core_numbers(panel, session, comparisons):
    first, second = comparisons["template"], comparisons["pruned"]
    session.set_result(first)
    session.set_result(second)
    assert second.report.accuracy["optimized"] < first.report.accuracy["optimized"]  # a visible difference
    original = first.report
    expected = [(original.size_bytes["original"] / 1000, 100 * original.accuracy["original"], ORIGINAL)]
    for result in (first, second):
        report = result.report
        expected.append((report.size_bytes["optimized"] / 1000, 100 * report.accuracy["optimized"], None))
    drawn = spots(panel.size_plot)
    assert flat(drawn) == pytest.approx(flat(expected))
    assert drawn[0][2] is ORIGINAL
    assert [entry.recipe for _, _, entry in drawn[1:]] == [first.recipe, second.recipe]
    xs, ys = panel.size_plot.path.getData()  # the path walked joins the recipes in order, not the star
    assert flat(zip(xs, ys, strict=True)) == pytest.approx(flat(expected[1:]))
    assert spots(panel.latency_plot) == []  # not timed: nothing to place against latency
    assert panel.size_plot.getPlotItem().getAxis("left").labelText == "top-1 accuracy (%)"

    tip = panel._tip(0, 0, drawn[2][2])
    assert tip.startswith("#2: top-1 accuracy ")
    assert f"{second.report.accuracy['optimized']:.1%}" in tip and "latency not timed" in tip
    assert recipe_summary(second.recipe) in tip and "prune 80% unstructured" in tip
    assert "no quantization" in tip


def test_same_recipe_replaces_its_point_and_brings_latency(panel, session, comparisons):
    first, second = comparisons["template"], comparisons["pruned"]
    session.set_result(first)
    session.set_result(second)
    timed = with_latency(session, first)
    session.set_result(timed)  # the same recipe again, now with latency
    assert len(panel.history) == 2
    assert [e.number for e in panel.history] == [1, 2]  # kept its number and place in the path
    row = timed.report.latency_ms[0]
    drawn = spots(panel.latency_plot)
    expected = [
        (row.original.median_ms, 100 * timed.report.accuracy["original"]),
        (row.optimized.median_ms, 100 * timed.report.accuracy["optimized"]),
    ]
    assert flat(drawn) == pytest.approx(flat(expected))
    assert drawn[1][2].recipe == first.recipe
    assert len(recipe_spots(panel.size_plot)) == 2  # the untimed recipe still shows against size
    assert f"latency {row.optimized.median_ms:.3g} ms" in panel._tip(0, 0, drawn[1][2])


def test_click_asks_for_the_recipe_and_star_does_not(panel, session, comparisons, qtbot):
    session.set_result(comparisons["template"])
    session.set_result(comparisons["int4"])
    plot = panel.size_plot
    spot = next(s for s in recipe_spots(plot) if s.data().recipe == comparisons["int4"].recipe)
    with qtbot.waitSignal(panel.recipe_requested, timeout=1000) as blocker:
        panel.on_points_clicked(plot.scatter, [spot], None)
    assert blocker.args == [comparisons["int4"].recipe]
    star = next(s for s in plot.scatter.points() if s.data() is ORIGINAL)
    with qtbot.assertNotEmitted(panel.recipe_requested):
        panel.on_points_clicked(plot.scatter, [star], None)

    # A real mouse click on the drawn point reaches the same handler through pyqtgraph's sigClicked.
    plot.getPlotItem().vb.autoRange()
    qtbot.wait(50)
    scene_pos = plot.getPlotItem().vb.mapViewToScene(spot.pos())
    view_pos = plot.mapFromScene(scene_pos)
    with qtbot.waitSignal(panel.recipe_requested, timeout=1000) as blocker:
        qtbot.mouseClick(plot.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(view_pos.x(), view_pos.y()))
    assert blocker.args == [comparisons["int4"].recipe]


def test_current_recipe_is_highlighted(panel, session, comparisons):
    session.set_result(comparisons["template"])
    session.set_result(comparisons["pruned"])

    def sizes():
        return {s.data().recipe: s.size() for s in recipe_spots(panel.size_plot)}

    template, pruned = comparisons["template"].recipe, comparisons["pruned"].recipe
    assert session.recipe == template
    assert sizes()[template] > sizes()[pruned]
    session.set_recipe(pruned)
    assert sizes()[pruned] > sizes()[template]


def test_model_change_data_change_and_clear_empty_it(panel, session, comparisons, demo_report):
    session.set_result(comparisons["template"])
    assert len(panel.history) == 1 and panel.clear_button.isEnabled()
    session.set_model(demo_report)
    assert len(panel.history) == 0 and spots(panel.size_plot) == []
    assert panel.history.original is None and not panel.clear_button.isEnabled()
    session.set_result(comparisons["pruned"])
    assert [e.number for e in panel.history] == [1]  # numbering starts again
    session.set_evaluation_data(None)  # other data, other numbers: not on the same plot
    assert len(panel.history) == 0
    session.set_result(comparisons["int4"])
    panel.clear_button.click()
    assert len(panel.history) == 0 and spots(panel.size_plot) == []
    assert panel.status.text() == "No recipes evaluated yet."


def test_history_caps_and_picks_the_metric_the_data_allow(comparisons):
    base = comparisons["template"]
    history = History(cap=3)
    recipes = [base.recipe.with_defaults(prune=PruneSpec(sparsity=s / 10)) for s in range(5)]
    for recipe in recipes:
        history.add(replace(base, recipe=recipe))
    assert [e.number for e in history] == [3, 4, 5]
    assert [e.recipe for e in history] == recipes[2:]
    assert history.metric == "accuracy"

    unlabelled = replace(base, report=replace(base.report, accuracy=None))
    history.clear()
    history.add(unlabelled)
    assert history.metric == "agreement"
    assert (history.original.metric, history.entries[0].point.metric) == (1.0, base.report.agreement)

    no_classes = replace(base, report=replace(unlabelled.report, agreement=None))
    history.clear()
    history.add(no_classes)
    assert history.metric == "sqnr_db"
    assert (history.original.metric, history.entries[0].point.metric) == (None, base.report.sqnr_db)


def test_window_click_goes_back_undoably(window, open_and_wait, qtbot, comparisons, error_calls):
    open_and_wait(window, DEMO_MODEL)
    session = window.session
    qtbot.waitUntil(lambda: session.result_is_current, timeout=JOB_TIMEOUT)
    tabs = [window.views.tabText(i) for i in range(window.views.count())]
    assert "History" in tabs and window.views.tabToolTip(tabs.index("History"))
    panel = window.history
    assert panel.history.entry_for(session.recipe) is not None  # the live comparison's point
    template = session.recipe
    session.set_result(comparisons["int4"])  # as if the user had been there before
    spot = next(s for s in recipe_spots(panel.size_plot) if s.data().recipe == comparisons["int4"].recipe)
    panel.on_points_clicked(panel.size_plot.scatter, [spot], None)
    assert session.recipe == comparisons["int4"].recipe
    assert window.undo_stack.undoText() == "Go back to a recipe from the history"
    window.undo_stack.undo()
    assert session.recipe == template
    assert error_calls == []
