"""The selected layer's optimized weights beside the original ones, and the prune threshold as lines that
can be dragged: what the plots hold equals core's numbers, and a drag is one undoable recipe edit."""

import numpy as np

from slimscope.core.layers import find_layers, layer_weights
from slimscope.resources import DEMO_MODEL

JOB_TIMEOUT = 60_000
ROW = 5


def complete(window):
    result = window.session.result
    return window.session.result_is_current and result is not None and bool(result.views)


def test_optimized_weights_and_threshold_are_shown_from_core(window, open_and_wait, qtbot, error_calls):
    open_and_wait(window, DEMO_MODEL)
    qtbot.waitUntil(lambda: complete(window), timeout=JOB_TIMEOUT)
    window.layer_table.select_row(ROW)
    name = window.layer_table.visible_names()[ROW]
    view = window.session.result.views[name]
    np.testing.assert_array_equal(window.histogram.optimized_curve.yData, view.stats.histogram_counts)
    np.testing.assert_array_equal(window.heatmap.optimized_image.image, view.stats.sparsity_map)
    assert window.heatmap.optimized_plot.isVisible()
    # The demo opens with sparse-50 (half the weights, ranked globally): the lines sit where this layer was cut.
    assert window.histogram.threshold == view.threshold and view.threshold > 0
    model = window.session.result.optimized.model
    original = window.session.loaded.model
    inits = {t.name: t for t in original.graph.initializer}
    layer = next(layer for layer in find_layers(original, {}) if layer.name == name)
    before = layer_weights(original, layer, inits)
    assert view.stats.zeros >= np.count_nonzero(np.abs(before) <= view.threshold) * 0.99
    assert np.count_nonzero(np.abs(before) > view.threshold) > 0 and model is not None
    assert error_calls == []


def test_dragging_the_threshold_is_one_undoable_edit(window, open_and_wait, qtbot):
    open_and_wait(window, DEMO_MODEL)
    qtbot.waitUntil(lambda: complete(window), timeout=JOB_TIMEOUT)
    window.layer_table.select_row(ROW)
    name = window.layer_table.visible_names()[ROW]
    before = window.session.recipe
    line = window.histogram.threshold_lines[1]  # the negative one: the threshold is its magnitude
    line.setValue(-0.05)
    line.sigPositionChangeFinished.emit(line)
    prune = window.session.recipe.settings_for(name).prune
    assert (prune.structure, prune.threshold, prune.sparsity) == ("unstructured", 0.05, None)
    assert window.histogram.threshold == 0.05  # the recipe's threshold is shown at once
    qtbot.waitUntil(lambda: complete(window), timeout=JOB_TIMEOUT)
    view = window.session.result.views[name]
    assert view.threshold <= 0.05  # nothing above the dragged threshold was cut
    window.undo_stack.undo()
    assert window.session.recipe == before
