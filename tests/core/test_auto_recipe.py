"""The automatic recipe: within the budget on the data it verified on, smaller or faster than float, an
ordinary recipe (it round-trips through JSON and the optimizer reproduces its numbers)."""

import pytest

from slimscope.core.auto_recipe import iter_auto_recipe
from slimscope.core.data import load_dataset
from slimscope.core.errors import RecipeError
from slimscope.core.evaluate import evaluate
from slimscope.core.loading import load_model
from slimscope.core.optimize import iter_optimize
from slimscope.core.recipe import parse_recipe
from slimscope.core.tasks import run_sync
from slimscope.resources import DEMO_CALIBRATION, DEMO_DATA, DEMO_MODEL


@pytest.fixture(scope="module")
def demo():
    return load_model(DEMO_MODEL), load_dataset(DEMO_DATA, limit=400), load_dataset(DEMO_CALIBRATION)


@pytest.mark.slow  # over 5 s: CI's second stage
@pytest.mark.parametrize("goal", ["size", "latency"])
def test_the_recipe_stays_within_the_budget_it_verified(demo, goal):
    loaded, data, calib = demo
    budget = 0.005
    partials = []
    result = run_sync(
        iter_auto_recipe(loaded, data, max_drop=budget, goal=goal, calibration=calib), partials.append
    )
    assert result.drop <= budget + 1e-9  # accuracies are counts over samples: float rounding only
    assert result.candidates and all(c.within_budget == (c.drop <= budget + 1e-9) for c in result.candidates)
    assert any(type(p.partial).__name__ == "Comparison" for p in partials)  # candidates stream in
    # An ordinary recipe: through JSON and the optimizer again, the same drop on the same data.
    recipe = parse_recipe(result.recipe.to_dict())
    optimized = run_sync(iter_optimize(loaded, recipe, calib.x))
    report = evaluate(loaded.model, optimized.model, data, latency=False)
    assert report.accuracy["original"] - report.accuracy["optimized"] == pytest.approx(result.drop)
    assert recipe.layers, "the demo network has layers that int8 barely changes"
    if goal == "size":
        assert report.size_bytes["optimized"] < 0.5 * report.size_bytes["original"]


def test_bad_goal_and_budget_are_refused(demo):
    loaded, data, _ = demo
    with pytest.raises(RecipeError, match="goal"):
        run_sync(iter_auto_recipe(loaded, data, goal="fastest"))
    with pytest.raises(RecipeError, match="budget"):
        run_sync(iter_auto_recipe(loaded, data, max_drop=2.0))


@pytest.mark.slow  # over 5 s: CI's second stage
def test_cli_writes_a_recipe_that_optimize_reads(tmp_path, capsys):
    from slimscope.core.cli import main
    from slimscope.core.recipe_files import load_recipe

    out = tmp_path / "auto.json"
    args = ["auto", str(DEMO_MODEL), "--data", str(DEMO_DATA), "--calib", str(DEMO_CALIBRATION),
            "--max-drop", "0.5", "--goal", "latency", "--samples", "300", "-o", str(out)]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "Chosen: drop" in printed and str(out) in printed
    recipe = load_recipe(out)
    assert recipe.layers and all(recipe.settings_for(name).quantize is not None for name, _ in recipe.layers)
    assert main(["auto", str(DEMO_MODEL), "--data", str(DEMO_DATA), "--max-drop", "150"]) == 2
    assert "percentage points" in capsys.readouterr().err


def test_islands_are_closed_so_chains_stay_quantized():
    from slimscope.core.auto_recipe import Move, _closing_islands
    from slimscope.core.layers import find_layers

    model = load_model(DEMO_MODEL).model
    names = [layer.name for layer in find_layers(model, {})]
    moves = [Move(name, "quantize", "int8", 0.0, 1.0) for name in names]
    chosen = [move for move in moves if move.layer != names[4]]  # names[4] would be a float island
    closed = _closing_islands(chosen, moves, model)
    assert {move.layer for move in closed} == set(names)
