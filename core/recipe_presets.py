"""Named starting recipes (presets), the same for `slimscope recipe --preset NAME` and Recipe → Presets.

Each preset is data: the recipe's `defaults` and `ptq` sections as they are written in a recipe file
(docs/recipe.md), and one line saying what it is for. `preset_recipe` turns one into a validated recipe
with an empty entry for every layer, like the template. The default recipe is `DEFAULT_PRESET`.

What the post-training aids were chosen by: `python benchmarks/ptq_defaults.py` (each aid against plain
int8 on real models with held-out data; the numbers are in the module's docstring there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from slimscope.core.errors import RecipeError
from slimscope.core.recipe import RECIPE_VERSION, Recipe, parse_recipe

_INT8 = {"weight_bits": 8, "activation_bits": 8, "granularity": "per_channel", "symmetric": True,
         "calibration": "minmax"}  # fmt: skip


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str  # one line, shown in menus and `slimscope recipe --help`
    sections: Mapping[str, Any]  # "defaults" and optionally "ptq", as in a recipe file


PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        preset.name: preset
        for preset in (
            Preset(
                "int8",
                "int8 weights (per channel) and uint8 activations, nothing else: the fastest form onnxruntime "
                "runs on CPUs",
                {"defaults": {"prune": None, "quantize": _INT8}},
            ),
            Preset(
                "int8-best",
                "int8 with every post-training aid that helped on the real models measured (the first and "
                "last layers kept in float): closer to the original, a little slower than plain int8",
                {"defaults": {"prune": None, "quantize": _INT8}, "ptq": {"keep_first_last": "float"}},
            ),
            Preset(
                "int4-weights",
                "4-bit weights, 8-bit activations: a smaller file, but slower in onnxruntime (weights are "
                "dequantized at run time) and further from the original",
                {"defaults": {"prune": None, "quantize": {**_INT8, "weight_bits": 4}}},
            ),
            Preset(
                "channels-30",
                "30 % of each layer's output channels removed (kept counts rounded to 16) + int8: faster and "
                "smaller, usually needs retraining to recover accuracy",
                {"defaults": {"prune": {"structure": "channel", "sparsity": 0.3}, "quantize": _INT8}},
            ),
            Preset(
                "sparse-50",
                "50 % of the weights set to zero, ranked across all layers together, + int8: only the "
                "gzip-compressed file shrinks (onnxruntime runs zeros like any weight)",
                {
                    "defaults": {
                        "prune": {"structure": "unstructured", "sparsity": 0.5, "scope": "global"},
                        "quantize": _INT8,
                    }
                },
            ),
        )
    }
)
DEFAULT_PRESET = "int8"
DEMO_PRESET = "sparse-50"  # the window opens the demo model with it, so the demo shows pruning as well


def preset_names() -> list[str]:
    return list(PRESETS)


def preset_recipe(name: str, layer_names: Sequence[str] = ()) -> Recipe:
    """The preset's recipe with an empty (inheriting) entry for each layer; RecipeError for an unknown name."""
    preset = PRESETS.get(name)
    if preset is None:
        raise RecipeError(f"There is no preset '{name}'; the presets are: {', '.join(PRESETS)}.")
    data = {"version": RECIPE_VERSION, **preset.sections, "layers": dict.fromkeys(layer_names, {})}
    return parse_recipe(data)


def apply_preset(recipe: Recipe, name: str) -> Recipe:
    """The preset's recipe for the same layers, keeping `recipe`'s data and training sections (they are
    about the user's data, not about how to optimize). Per-layer overrides are replaced by empty entries:
    a preset means exactly what `slimscope recipe --preset NAME` writes."""
    result = preset_recipe(name, [layer for layer, _ in recipe.layers])
    return replace(result, data_json=recipe.data_json, training_json=recipe.training_json)
