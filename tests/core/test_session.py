"""The Session: plain Python state with psygnal signals (no Qt)."""

from slimscope.core.inspection import iter_inspect
from slimscope.core.loading import load_model
from slimscope.core.recipe_presets import DEMO_PRESET, preset_recipe
from slimscope.core.session import Session
from slimscope.core.tasks import run_sync
from slimscope.resources import DEMO_CALIBRATION, DEMO_DATA, DEMO_MODEL


def test_demo_model_starts_with_template_recipe_and_demo_data():
    session = Session()
    seen = []
    session.recipe_changed.connect(lambda recipe: seen.append(recipe))
    session.set_model(run_sync(iter_inspect(load_model(DEMO_MODEL))))
    assert [name for name, _ in session.recipe.layers] == session.layer_names
    # The demo shows pruning through its preset; any other model starts quantized only (the default).
    assert session.recipe == preset_recipe(DEMO_PRESET, session.layer_names)
    assert session.recipe.defaults.prune is not None and session.recipe.defaults.quantize is not None
    assert (session.evaluation_data, session.calibration_data) == (DEMO_DATA, DEMO_CALIBRATION)
    assert seen == [session.recipe] and session.result is None
    edited = session.recipe.with_layer(session.layer_names[0], prune=None)
    session.set_recipe(edited)
    session.set_recipe(edited)  # no change: no signal
    assert seen == [seen[0], edited]
    assert not session.result_is_current
