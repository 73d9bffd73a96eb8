"""Float islands: a float layer between quantized ones is named, with its neighbours, in the optimizer's
warnings; a float tail or head, or everything quantized, is not an island."""

from slimscope.core.data import load_dataset
from slimscope.core.layers import find_layers
from slimscope.core.loading import load_model
from slimscope.core.optimize import iter_optimize
from slimscope.core.quantize.islands import float_islands
from slimscope.core.recipe import LayerSettings, QuantSpec, Recipe
from slimscope.core.tasks import run_sync
from slimscope.resources import DEMO_CALIBRATION, DEMO_MODEL


def test_a_float_layer_inside_a_quantized_chain_is_an_island():
    model = load_model(DEMO_MODEL).model
    names = [layer.name for layer in find_layers(model, {})]
    middle = names[4]
    islands = float_islands(model, set(names) - {middle})
    assert [name for name, _, _ in islands] == [middle]
    _, before, after = islands[0]
    assert names[3] in before and names[5] in after
    assert float_islands(model, set(names)) == []  # all quantized
    assert float_islands(model, set(names[:-1])) == []  # the float classifier ends the chain: no island
    assert float_islands(model, set(names[1:])) == []  # a float first layer has nothing quantized before it


def test_the_optimizer_warns_about_an_island():
    loaded = load_model(DEMO_MODEL)
    names = [layer.name for layer in find_layers(loaded.model, {})]
    recipe = Recipe(defaults=LayerSettings(None, QuantSpec())).with_layer(names[6], quantize=None)
    calib = load_dataset(DEMO_CALIBRATION, limit=32).x
    result = run_sync(iter_optimize(loaded, recipe, calib))
    assert len(result.warnings) == 1 and names[6] in result.warnings[0]
    assert "Mixed precision" in result.warnings[0]
    all_int8 = run_sync(iter_optimize(loaded, Recipe(defaults=LayerSettings(None, QuantSpec())), calib))
    assert all_int8.warnings == []
