"""Recipe → Presets (one undoable edit each) and the comparison panel's ⚠ when a recipe costs too much."""

import pytest

from slimscope.core.evaluate.quality_warnings import AGREEMENT_MIN
from slimscope.core.recipe import QuantSpec
from slimscope.core.recipe_presets import DEMO_PRESET, PRESETS, apply_preset, preset_recipe
from slimscope.resources import DEMO_MODEL

JOB_TIMEOUT = 60_000


@pytest.fixture
def opened(window, open_and_wait, qtbot):
    open_and_wait(window, DEMO_MODEL)
    qtbot.waitUntil(lambda: window.session.result_is_current, timeout=JOB_TIMEOUT)
    return window


def recipe_menu_presets(window) -> list[str]:
    recipe_menu = next(a.menu() for a in window.menuBar().actions() if a.text() == "&Recipe")
    presets = next(a.menu() for a in recipe_menu.actions() if a.menu() and a.text() == "&Presets")
    return [action.text() for action in presets.actions()]


def test_the_demo_opens_with_its_pruning_preset_and_presets_apply_and_undo(opened, qtbot, error_calls):
    window, session = opened, opened.session
    assert recipe_menu_presets(window) == list(PRESETS)
    start = session.recipe
    assert start == preset_recipe(DEMO_PRESET, session.layer_names)
    assert window.actions_by_key["preset_int8"].isEnabled()

    window.actions_by_key["preset_int8"].trigger()
    assert session.recipe == apply_preset(start, "int8") and session.recipe.defaults.prune is None
    assert window.undo_stack.count() == 1 and window.undo_stack.undoText() == "Preset int8"
    window.actions_by_key["preset_channels-30"].trigger()
    assert session.recipe.defaults.prune.structure == "channel"
    assert window.undo_stack.count() == 2

    window.undo_stack.undo()
    assert session.recipe == apply_preset(start, "int8")
    window.undo_stack.undo()
    assert session.recipe == start
    window.undo_stack.redo()
    assert session.recipe.defaults.prune is None
    assert error_calls == []


def test_a_destructive_recipe_shows_a_warning_sign_with_the_worst_layers(opened, qtbot, error_calls):
    window, session = opened, opened.session
    crushed = preset_recipe("int8", session.layer_names).with_defaults(quantize=QuantSpec(weight_bits=2))
    window.push_recipe(crushed, "2-bit weights")
    qtbot.waitUntil(
        lambda: session.result_is_current and bool(session.result.report.layers), timeout=JOB_TIMEOUT
    )
    report = session.result.report
    assert report.agreement < AGREEMENT_MIN and "agreement" in report.flagged
    text = window.comparison.warnings.text()
    assert text.startswith("⚠ ") and "(below 95.0%)" in text
    assert "The layers with the largest measured error: '" in text and "sensitivity" in text
    assert window.comparison.cell("agreement", "optimized") == f"{report.agreement:.1%}"
    assert window.comparison.cell("agreement", "change").startswith("⚠")
    assert error_calls == []


def test_the_panel_says_when_sqnr_is_measured_on_logits(qtbot, demo_report):
    from slimscope.core.comparison import Comparison
    from slimscope.core.evaluate.quality_warnings import judge
    from slimscope.core.evaluate.report import EvalReport
    from slimscope.core.optimize import OptimizeResult
    from slimscope.core.session import Session
    from slimscope.gui.panels.comparison_panel import ROW_TITLES, ROWS, ComparisonPanel

    session = Session()
    session.set_model(demo_report)
    panel = ComparisonPanel(session)
    qtbot.addWidget(panel)
    verdict = judge(agreement=0.85, sqnr_db=9.14, sqnr_on="the logits before Softmax")
    sizes = {"original": 1000, "optimized": 300}
    report = EvalReport(
        samples=80, accuracy=None, agreement=0.85, sqnr_db=9.14, cosine=0.8, latency_ms=None,
        size_bytes=sizes, gzip_bytes=sizes, nonzero_params=sizes, macs=None, layers=(),
        warnings=verdict.warnings, sqnr_on="the logits before Softmax", flagged=verdict.flagged,
    )  # fmt: skip
    session.set_result(Comparison(session.recipe, OptimizeResult(demo_report.loaded.model), report))
    header = panel.table.verticalHeaderItem(ROWS.index("sqnr_db"))
    assert header.text() == "logit SQNR" and "the logits before Softmax" in header.toolTip()
    assert panel.cell("sqnr_db", "optimized") == "9.1 dB" and panel.cell("agreement", "optimized") == "85.0%"
    assert panel.cell("sqnr_db", "change") == "⚠" and panel.warnings.text().startswith("⚠ Top-1 agreement")
    session.set_result(None)
    plain = Comparison(session.recipe, OptimizeResult(demo_report.loaded.model), replace_sqnr_on(report))
    session.set_result(plain)
    assert header.text() == ROW_TITLES["sqnr_db"]


def replace_sqnr_on(report):
    from dataclasses import replace

    return replace(report, sqnr_on="the outputs", warnings=(), flagged=frozenset())
