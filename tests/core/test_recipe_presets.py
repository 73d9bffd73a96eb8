"""Presets: each is a valid recipe that runs, the default is quantization only, unknown names are refused."""

import numpy as np
import pytest

from slimscope.core.cli import main
from slimscope.core.errors import RecipeError
from slimscope.core.loading import load_model
from slimscope.core.optimize import iter_optimize
from slimscope.core.recipe import PtqSpec, QuantSpec, default_recipe, template_recipe
from slimscope.core.recipe_files import dumps_recipe, load_recipe, loads_recipe
from slimscope.core.recipe_presets import (
    DEFAULT_PRESET,
    PRESETS,
    apply_preset,
    preset_names,
    preset_recipe,
)
from slimscope.core.tasks import run_sync
from slimscope.resources import DEMO_CALIBRATION, DEMO_MODEL

REQUIRED = {"int8", "int8-best", "int4-weights", "channels-30", "sparse-50"}


def test_the_required_presets_exist_and_each_is_a_valid_recipe():
    assert set(preset_names()) >= REQUIRED and DEFAULT_PRESET in PRESETS
    for name in preset_names():
        recipe = preset_recipe(name, ["a", "b"])
        assert loads_recipe(dumps_recipe(recipe)) == recipe  # through the schema and back
        assert recipe.defaults.quantize is not None, name  # every preset quantizes
        assert [layer for layer, _ in recipe.layers] == ["a", "b"]
        assert PRESETS[name].summary


def test_what_each_preset_asks_for():
    int8 = preset_recipe("int8")
    assert int8.defaults.prune is None and int8.defaults.quantize == QuantSpec() and int8.ptq == PtqSpec()
    assert not int8.defaults.quantize.activation_symmetric  # uint8 activations: the fast kernels
    assert (
        preset_recipe("int8-best").defaults == int8.defaults and preset_recipe("int8-best").ptq != PtqSpec()
    )
    assert preset_recipe("int4-weights").defaults.quantize.weight_bits == 4
    channels = preset_recipe("channels-30").defaults.prune
    assert (channels.structure, channels.sparsity) == ("channel", 0.3)
    sparse = preset_recipe("sparse-50").defaults.prune
    assert (sparse.structure, sparse.sparsity, sparse.scope) == ("unstructured", 0.5, "global")


def test_the_template_and_the_default_quantize_only():
    template = template_recipe(["conv", "fc"])
    assert template.defaults.prune is None and template.defaults.quantize == QuantSpec()
    assert template == preset_recipe(DEFAULT_PRESET, ["conv", "fc"])
    assert default_recipe() == preset_recipe(DEFAULT_PRESET)
    assert "prune" not in dumps_recipe(template).split('"layers"')[0].replace('"prune": null', "")


def test_an_unknown_preset_names_the_presets():
    with pytest.raises(RecipeError) as caught:
        preset_recipe("int9")
    message = str(caught.value)
    assert message.startswith("There is no preset 'int9'")
    assert all(name in message for name in preset_names()) and "\n" not in message


def test_applying_a_preset_keeps_the_data_section_and_replaces_the_rest():
    mine = template_recipe(["conv", "fc"]).with_layer("fc", quantize=None)
    mine = mine.with_data({"calibration_samples": 32}).with_ptq(PtqSpec(equalize=True))
    applied = apply_preset(mine, "sparse-50")
    assert applied.data == {"calibration_samples": 32}
    assert applied.ptq == PtqSpec() and applied.settings_for("fc").quantize == QuantSpec()
    assert applied.defaults == preset_recipe("sparse-50").defaults


@pytest.fixture(scope="module")
def demo():
    with np.load(DEMO_CALIBRATION) as calib:
        return load_model(DEMO_MODEL), calib["x"][:64]


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_every_preset_optimizes_the_demo(demo, name):
    loaded, calib = demo
    result = run_sync(iter_optimize(loaded, preset_recipe(name), calib))
    if preset_recipe(name).defaults.prune is not None:
        assert result.sparsity or result.channels_removed
    assert any("int" in form for form in result.forms.values())


def test_cli_recipe_preset_writes_the_preset(tmp_path, capsys):
    target = tmp_path / "r.json"
    assert main(["recipe", str(DEMO_MODEL), "--preset", "channels-30", "-o", str(target)]) == 0
    written = load_recipe(target)
    assert written.defaults == preset_recipe("channels-30").defaults and len(written.layers) > 3


def test_cli_recipe_unknown_preset_is_one_line_and_exit_2(tmp_path, capsys):
    target = tmp_path / "r.json"
    assert main(["recipe", str(DEMO_MODEL), "--preset", "fastest", "-o", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "int8, int8-best, int4-weights, channels-30, sparse-50" in err
    assert not target.exists()
