"""Tuning in the window: settings edits become undoable recipes, the live comparison matches core's own
numbers, stale jobs never reach the panel, export and recipe files."""

import json

import numpy as np
import onnxruntime as ort
import pytest

from slimscope.core.comparison import COMPARISON_SAMPLES, LIVE_LAYER_SAMPLES
from slimscope.core.data import fit_to_model, load_dataset
from slimscope.core.evaluate import RunningMetrics, iter_evaluate, layer_tensors
from slimscope.core.optimize import iter_optimize
from slimscope.core.recipe_files import load_recipe
from slimscope.core.tasks import run_sync
from slimscope.gui.panels.comparison_panel import report_cells
from slimscope.resources import DEMO_CALIBRATION, DEMO_DATA, DEMO_MODEL

LAYER_ROW = 3
JOB_TIMEOUT = 30_000


@pytest.fixture
def opened(window, open_and_wait, qtbot):
    """The demo model open, its first comparison (its sparse-50 preset) finished."""
    open_and_wait(window, DEMO_MODEL)
    qtbot.waitUntil(lambda: window.session.result_is_current, timeout=JOB_TIMEOUT)
    return window


def set_unstructured_half(window, qtbot, row=LAYER_ROW):
    window.layer_table.select_row(row)
    panel = window.settings_panel
    assert panel.targets == [window.layer_table.visible_names()[row]]
    panel.structure.setCurrentText("unstructured")
    before = window.session.recipe
    panel.sparsity_spin.setValue(0.4)  # the demo preset already shows 0.5 (inherited, ranked globally)
    panel.sparsity_spin.setValue(0.5)
    assert window.session.recipe != before
    assert panel.sparsity_slider.value() == 50  # slider and spin box kept in sync


def test_demo_data_is_preselected(opened):
    assert opened.session.evaluation_data == DEMO_DATA
    assert opened.session.calibration_data == DEMO_CALIBRATION
    assert opened.session.recipe.layers[0][0] == opened.session.layer_names[0]


def test_sparsity_edit_gives_core_numbers_and_undo_restores(opened, qtbot, error_calls):
    window, session = opened, opened.session
    before = session.recipe
    partials = []
    window.live.progressed.connect(lambda p: partials.append(p.partial))
    set_unstructured_half(window, qtbot)
    name = window.layer_table.visible_names()[LAYER_ROW]
    spec = session.recipe.settings_for(name).prune
    assert (spec.structure, spec.sparsity, spec.scope) == ("unstructured", 0.5, "layer")
    assert window.undo_stack.count() == 1  # 0.4 then 0.5: one merged step
    qtbot.waitUntil(
        lambda: session.result_is_current and session.result.report.latency_ms is not None,
        timeout=JOB_TIMEOUT,
    )

    loaded = session.loaded
    calib = fit_to_model(load_dataset(DEMO_CALIBRATION), loaded.model)
    optimized = run_sync(iter_optimize(loaded, session.recipe, calib.x))
    data = fit_to_model(load_dataset(DEMO_DATA, limit=COMPARISON_SAMPLES), loaded.model)
    expected = run_sync(
        iter_evaluate(
            loaded.model, optimized.model, data, latency=False, per_layer=layer_tensors(loaded.model),
            per_layer_samples=LIVE_LAYER_SAMPLES,
        )
    )  # fmt: skip
    timed = {"latency_ms", "latency", "warnings"}  # timings differ from run to run
    got = {k: v for k, v in session.result.report.to_dict().items() if k not in timed}
    assert got == {k: v for k, v in expected.to_dict().items() if k not in timed}
    for key, texts in report_cells(expected).items():
        if key != "latency_ms":
            assert tuple(window.comparison.cell(key, c) for c in ("original", "optimized", "change")) == texts
    assert window.comparison.cell("latency_ms", "change").endswith(("faster", "slower"))
    running = [p for p in partials if isinstance(p, RunningMetrics)]
    assert running and running[-1].samples == COMPARISON_SAMPLES  # accuracy streamed in while evaluating
    assert window.comparison.cell("accuracy", "optimized") == f"{expected.accuracy['optimized']:.1%}"
    assert error_calls == []

    window.actions_by_key["undo"].trigger()
    assert session.recipe == before
    assert session.recipe.settings_for(name).prune.scope == "global"
    window.actions_by_key["redo"].trigger()
    assert session.recipe.settings_for(name).prune == spec


def test_slider_drag_is_one_undo_step(opened):
    window = opened
    window.layer_table.select_row(LAYER_ROW)
    before = window.session.recipe
    for step in (10, 20, 30):
        window.settings_panel.sparsity_slider.setValue(step)
    assert window.settings_panel.sparsity_spin.value() == pytest.approx(0.3)
    assert window.undo_stack.count() == 1
    window.undo_stack.undo()
    assert window.session.recipe == before


def test_defaults_mode_and_multi_select(opened):
    window, session = opened, opened.session
    panel = window.settings_panel
    panel.defaults_mode.setChecked(True)
    panel.quant_box.setChecked(False)
    assert session.recipe.defaults.quantize is None
    panel.defaults_mode.setChecked(False)
    view = window.layer_table.view
    view.selectionModel().clearSelection()
    for row in (1, 2):
        index = window.layer_table.proxy.index(row, 0)
        view.selectionModel().select(index, view.selectionModel().SelectionFlag.Select
                                     | view.selectionModel().SelectionFlag.Rows)  # fmt: skip
    names = window.layer_table.visible_names()[1:3]
    assert panel.targets == names
    panel.quant_box.setChecked(True)
    panel.weight_bits.setCurrentText("4")
    assert [session.recipe.settings_for(n).quantize.weight_bits for n in names] == [4, 4]
    assert session.recipe.settings_for(window.layer_table.visible_names()[0]).quantize is None


def test_a_newer_edit_cancels_the_running_job(opened, qtbot):
    window, session = opened, opened.session
    delivered = []
    session.result_changed.connect(delivered.append)
    set_unstructured_half(window, qtbot)
    window.live.run_now()  # start the first job at once
    first_generation = window.live.generation
    assert window.live.runner.running
    window.settings_panel.sparsity_spin.setValue(0.25)  # a second edit while it runs
    assert window.live.generation > first_generation and not window.live.runner.running
    qtbot.waitUntil(
        lambda: session.result_is_current and session.result.report.latency_ms is not None,
        timeout=JOB_TIMEOUT,
    )
    qtbot.wait(300)
    # Only the newer edit's results arrive: its headline numbers, then the same with latency timed.
    name = window.layer_table.visible_names()[LAYER_ROW]
    assert [result.recipe.settings_for(name).prune.sparsity for result in delivered] == [0.25, 0.25]
    assert delivered[0].report.latency_ms is None and delivered[1].report.layers


def test_export_runs_in_onnxruntime_and_refuses_the_source(opened, tmp_path, error_calls):
    window = opened
    target = tmp_path / "small.onnx"
    from slimscope.gui.recipe_files import export_optimized

    export_optimized(window, target)
    assert error_calls == []
    report = json.loads((tmp_path / "small.report.json").read_text())
    assert report["accuracy"] == window.session.result.report.accuracy
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    data = fit_to_model(load_dataset(DEMO_DATA, limit=16), window.session.loaded.model)
    (out,) = session.run(None, {session.get_inputs()[0].name: data.x})
    assert out.shape[0] == 16 and np.isfinite(out).all()

    source_bytes = DEMO_MODEL.read_bytes()
    export_optimized(window, DEMO_MODEL)
    assert len(error_calls) == 1 and "overwrite" in str(error_calls[0])
    assert DEMO_MODEL.read_bytes() == source_bytes
    assert "Ctrl+E" in window.actions_by_key["export"].shortcut().toString()


def test_recipe_save_load_round_trips(opened, qtbot, tmp_path, error_calls):
    from slimscope.gui.recipe_files import load_recipe_from, save_recipe_as

    window, session = opened, opened.session
    set_unstructured_half(window, qtbot)
    edited = session.recipe
    path = tmp_path / "recipe.json"
    save_recipe_as(window, path)
    assert load_recipe(path) == edited  # the CLI's format
    window.undo_stack.undo()
    assert session.recipe != edited
    load_recipe_from(window, path)
    assert session.recipe == edited
    window.undo_stack.undo()  # loading is undoable too
    assert session.recipe != edited
    assert error_calls == []


def test_export_from_the_dialog_offers_the_folder(opened, tmp_path, monkeypatch):
    from slimscope.gui import recipe_files

    target = tmp_path / "chosen.onnx"
    offered = []
    monkeypatch.setattr(recipe_files.QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    monkeypatch.setattr(recipe_files, "offer_to_show", lambda window, path: offered.append(path))
    recipe_files.export_optimized(opened)
    assert target.is_file() and offered == [target]
