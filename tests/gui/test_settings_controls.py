"""Every quantization and pruning control of the settings panel reaches the recipe, and the rows shown
follow what applies (threshold vs sparsity, ranking only for the defaults)."""

from slimscope.resources import DEMO_MODEL

ROW = 3


def test_quantization_controls_reach_the_recipe(window, open_and_wait):
    open_and_wait(window, DEMO_MODEL)
    window.layer_table.select_row(ROW)
    name = window.layer_table.visible_names()[ROW]
    panel = window.settings_panel
    panel.activation_bits.setCurrentText("16")
    panel.calibration.setCurrentText("percentile")
    panel.symmetric.setChecked(False)
    panel.activation_symmetric.setChecked(True)
    spec = window.session.recipe.settings_for(name).quantize
    assert (spec.activation_bits, spec.calibration, spec.symmetric, spec.activation_symmetric) == (
        16, "percentile", False, True,
    )  # fmt: skip
    assert window.undo_stack.count() == 4
    window.undo_stack.undo()
    assert window.session.recipe.settings_for(name).quantize.activation_symmetric is False
    assert not panel.activation_symmetric.isChecked()  # the panel follows the undone recipe


def test_threshold_mode_and_global_ranking(window, open_and_wait):
    open_and_wait(window, DEMO_MODEL)
    panel, form = window.settings_panel, window.settings_panel._prune_form
    panel.defaults_mode.setChecked(True)
    assert panel.rank_globally.isChecked()  # the template ranks across layers
    panel.rank_globally.setChecked(False)
    assert window.session.recipe.defaults.prune.scope == "layer"
    window.layer_table.select_row(ROW)
    panel.defaults_mode.setChecked(False)
    name = window.layer_table.visible_names()[ROW]
    assert not form.isRowVisible(panel.rank_globally)  # one layer: no ranking across layers
    panel.amount.setCurrentText("threshold")
    prune = window.session.recipe.settings_for(name).prune
    assert prune.sparsity is None and prune.threshold > 0
    assert form.isRowVisible(panel.threshold_spin) and not form.isRowVisible(panel._sparsity_row)
    panel.threshold_spin.setValue(0.125)
    assert window.session.recipe.settings_for(name).prune.threshold == 0.125
    assert window.histogram.threshold == 0.125  # the lines follow the recipe at once


def test_quantization_aids_are_whole_model_recipe_edits(window, open_and_wait):
    open_and_wait(window, DEMO_MODEL)
    panel = window.settings_panel
    assert not panel.relu6_to_relu.isEnabled()  # only meaningful with equalization
    panel.equalize.setChecked(True)
    panel.bias_correction.setChecked(True)
    panel.keep_first_last.setCurrentText("16-bit")
    ptq = window.session.recipe.ptq
    assert (ptq.equalize, ptq.bias_correction, ptq.keep_first_last, ptq.relu6_to_relu) == (
        True,
        True,
        "int16",
        False,
    )
    assert panel.relu6_to_relu.isEnabled()
    assert window.session.recipe.to_dict()["ptq"] == {
        "equalize": True,
        "bias_correction": True,
        "keep_first_last": "int16",
    }
    window.undo_stack.undo()
    assert (
        window.session.recipe.ptq.keep_first_last is None
        and panel.keep_first_last.currentText() == "as the others"
    )
