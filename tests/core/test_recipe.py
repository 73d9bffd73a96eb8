"""The recipe format: parsing, merge semantics, error messages, saving and the template."""

from __future__ import annotations

import copy
import json
import os
from importlib import resources
from typing import Any

import jsonschema
import pytest

from slimscope.core.errors import RecipeError
from slimscope.core.recipe import (
    INHERIT,
    LayerSettings,
    PruneSpec,
    QuantSpec,
    Recipe,
    default_recipe,
    parse_recipe,
    template_recipe,
)
from slimscope.core.recipe_files import dumps_recipe, load_recipe, loads_recipe, save_recipe

EXAMPLE: dict[str, Any] = {
    "version": 1,
    "defaults": {
        "prune": {"structure": "unstructured", "sparsity": 0.5},
        "quantize": {
            "weight_bits": 8,
            "activation_bits": 8,
            "granularity": "per_channel",
            "symmetric": True,
            "calibration": "minmax",
        },
    },
    "layers": {"conv1": {"quantize": None}, "fc2": {"prune": {"threshold": 0.001}}},
}


def example(**changes: Any) -> dict[str, Any]:
    """A deep copy of EXAMPLE with top-level keys replaced."""
    return copy.deepcopy(EXAMPLE) | changes


# --- round trip and merge semantics ---------------------------------------------------------


def test_example_round_trips() -> None:
    recipe = parse_recipe(EXAMPLE)
    assert recipe.to_dict() == EXAMPLE
    assert parse_recipe(recipe.to_dict()) == recipe
    assert loads_recipe(dumps_recipe(recipe)) == recipe
    assert json.loads(dumps_recipe(recipe)) == EXAMPLE


def test_threshold_override_replaces_default_sparsity_and_keeps_structure() -> None:
    data = example()
    data["defaults"]["prune"] = {"structure": "2:4", "sparsity": 0.5}
    fc2 = parse_recipe(data).settings_for("fc2").prune
    assert fc2 == PruneSpec(structure="2:4", sparsity=None, threshold=0.001)
    assert (fc2.n, fc2.m) == (2, 4)


def test_sparsity_override_replaces_default_threshold() -> None:
    data = example(layers={"a": {"prune": {"sparsity": 0.25}}})
    data["defaults"]["prune"] = {"threshold": 0.01}
    assert parse_recipe(data).settings_for("a").prune == PruneSpec(sparsity=0.25)


def test_null_disables_and_absent_key_inherits() -> None:
    recipe = parse_recipe(EXAMPLE)
    conv1, fc2 = recipe.settings_for("conv1"), recipe.settings_for("fc2")
    assert conv1.quantize is None  # null: kept in float
    assert conv1.prune == recipe.defaults.prune  # absent: inherits
    assert fc2.quantize == recipe.defaults.quantize == QuantSpec()
    assert recipe.settings_for("not_listed") == recipe.defaults


def test_quantize_override_is_merged_field_by_field() -> None:
    recipe = parse_recipe(example(layers={"a": {"quantize": {"weight_bits": 4}}}))
    assert recipe.settings_for("a").quantize == QuantSpec(weight_bits=4)


def test_missing_defaults_mean_nothing_and_overrides_merge_over_spec_defaults() -> None:
    recipe = parse_recipe(
        {"version": 1, "defaults": {"quantize": {}}, "layers": {"a": {"prune": {"sparsity": 0.3}}}}
    )
    assert recipe.defaults == LayerSettings(prune=None, quantize=QuantSpec())
    assert recipe.settings_for("a").prune == PruneSpec(structure="unstructured", sparsity=0.3)
    assert parse_recipe({"version": 1}).settings_for("x") == LayerSettings(None, None)


def test_integral_floats_are_accepted_as_bits() -> None:
    data = example()
    data["defaults"]["quantize"]["weight_bits"] = 4.0
    bits = parse_recipe(data).defaults.quantize.weight_bits
    assert bits == 4 and isinstance(bits, int)


def test_n_and_m_are_none_without_n_m_structure() -> None:
    assert (PruneSpec(sparsity=0.5).n, PruneSpec(structure="channel", sparsity=0.5).m) == (None, None)
    assert (PruneSpec(structure="1:16", sparsity=0.5).n, PruneSpec(structure="1:16").m) == (1, 16)


# --- edits ------------------------------------------------------------------------------------


def test_with_layer_returns_new_recipes_and_distinguishes_keep_none_and_inherit() -> None:
    recipe = parse_recipe(EXAMPLE)
    edited = recipe.with_layer("fc2", quantize={"weight_bits": 4})
    assert recipe == parse_recipe(EXAMPLE)  # the original is unchanged
    assert edited.settings_for("fc2").quantize == QuantSpec(weight_bits=4)
    assert edited.settings_for("fc2").prune == recipe.settings_for("fc2").prune  # KEEP
    assert edited.with_layer("fc2", prune=None).settings_for("fc2").prune is None
    back = edited.with_layer("fc2", prune=INHERIT, quantize=INHERIT)
    assert back.settings_for("fc2") == recipe.defaults
    assert back.to_dict()["layers"]["fc2"] == {}
    added = recipe.with_layer("new", prune=PruneSpec(structure="channel", sparsity=0.3))
    assert list(added.to_dict()["layers"]) == ["conv1", "fc2", "new"]
    assert added.without_layer("new") == recipe


def test_with_defaults_changes_every_inheriting_layer() -> None:
    recipe = parse_recipe(EXAMPLE).with_defaults(quantize=QuantSpec(weight_bits=4), prune=None)
    assert recipe.settings_for("fc2").quantize == QuantSpec(weight_bits=4)
    assert recipe.settings_for("conv1") == LayerSettings(prune=None, quantize=None)
    assert recipe.settings_for("fc2").prune == PruneSpec(threshold=0.001)


def test_edits_are_validated_like_files() -> None:
    recipe = parse_recipe(EXAMPLE)
    with pytest.raises(RecipeError) as info:
        recipe.with_layer("fc2", prune={"sparsity": 1.5})
    assert (info.value.layer, info.value.field) == ("fc2", "prune.sparsity")
    with pytest.raises(RecipeError) as info:  # the defaults now clash with fc2's threshold
        recipe.with_defaults(prune=PruneSpec(structure="channel", sparsity=0.5))
    assert (info.value.layer, info.value.field) == ("fc2", "prune.threshold")


def test_unknown_layers_lists_overrides_missing_from_the_model() -> None:
    recipe = parse_recipe(EXAMPLE)
    assert recipe.unknown_layers(["conv1", "conv2"]) == ["fc2"]
    assert recipe.unknown_layers(["fc2", "conv1"]) == []


# --- invalid input ----------------------------------------------------------------------------


def _with_default(technique: str, **fields: Any) -> dict[str, Any]:
    data = example()
    data["defaults"][technique] |= fields
    return data


def _with_layer(layer: str, technique: str, spec: Any) -> dict[str, Any]:
    data = example()
    data["layers"][layer] = {technique: spec}
    return data


INVALID = {
    "bits 9": (_with_default("quantize", weight_bits=9), "defaults", "quantize.weight_bits"),
    "bits 1": (_with_layer("conv1", "quantize", {"weight_bits": 1}), "conv1", "quantize.weight_bits"),
    "bits bool": (_with_default("quantize", weight_bits=True), "defaults", "quantize.weight_bits"),
    "activation 4": (
        _with_layer("fc2", "quantize", {"activation_bits": 4}),
        "fc2",
        "quantize.activation_bits",
    ),
    "per_row": (_with_default("quantize", granularity="per_row"), "defaults", "quantize.granularity"),
    "symmetric str": (_with_default("quantize", symmetric="yes"), "defaults", "quantize.symmetric"),
    "calibration": (_with_layer("c", "quantize", {"calibration": "mse"}), "c", "quantize.calibration"),
    "sparsity 1.0": (_with_layer("fc2", "prune", {"sparsity": 1.0}), "fc2", "prune.sparsity"),
    "sparsity nan": (_with_layer("fc2", "prune", {"sparsity": float("nan")}), "fc2", "prune.sparsity"),
    "threshold < 0": (_with_layer("fc2", "prune", {"threshold": -0.1}), "fc2", "prune.threshold"),
    "both": (_with_layer("fc2", "prune", {"sparsity": 0.1, "threshold": 0.1}), "fc2", "prune"),
    "both in defaults": (_with_default("prune", threshold=0.1), "defaults", "prune"),
    "neither": (_with_default("prune", sparsity=None), "defaults", "prune.sparsity"),
    "3:2": (_with_layer("fc2", "prune", {"structure": "3:2"}), "fc2", "prune.structure"),
    "2:17": (_with_default("prune", structure="2:17"), "defaults", "prune.structure"),
    "block": (_with_default("prune", structure="block"), "defaults", "prune.structure"),
    # fc2's threshold override meets the default 'channel' structure
    "channel+threshold": (_with_default("prune", structure="channel"), "fc2", "prune.threshold"),
    "unknown field": (_with_layer("fc2", "prune", {"amount": 0.5}), "fc2", "prune.amount"),
    "unknown layer key": (example(layers={"a": {"prun": None}}), "a", "prun"),
    "unknown top-level key": (example(comment="hi"), None, "comment"),
    "version 2": (example(version=2), None, "version"),
    "no version": ({"defaults": {}}, None, "version"),
    "layers not an object": (example(layers=["conv1"]), None, "layers"),
    "prune not an object": (_with_layer("fc2", "prune", 0.5), "fc2", "prune"),
}


@pytest.mark.parametrize(("data", "layer", "field"), INVALID.values(), ids=INVALID.keys())
def test_invalid_recipe_names_layer_and_field(data: Any, layer: str | None, field: str) -> None:
    with pytest.raises(RecipeError) as info:
        parse_recipe(data)
    error = info.value
    message = str(error)
    assert (error.layer, error.field) == (layer, field)
    assert f"field '{field}'" in message
    if layer == "defaults":
        assert message.startswith("Recipe defaults, field ")
    elif layer is not None:
        assert message.startswith(f"Recipe layer '{layer}', field ")
    assert message.endswith(".") and "\n" not in message


def test_message_matches_documented_example() -> None:
    with pytest.raises(RecipeError) as info:
        parse_recipe(_with_layer("fc2", "prune", {"sparsity": 1.5}))
    assert str(info.value) == (
        "Recipe layer 'fc2', field 'prune.sparsity': must be a number in [0, 1), got 1.5."
    )


def test_not_an_object() -> None:
    with pytest.raises(RecipeError, match="must be a JSON object"):
        parse_recipe([1, 2])  # type: ignore[arg-type]


def test_invalid_json_text_gives_line_and_column(tmp_path: Any) -> None:
    text = '{"version": 1,\n  "layers": {"a": {},}\n}'
    with pytest.raises(RecipeError, match=r"line 2, column \d+"):
        loads_recipe(text)
    path = tmp_path / "broken.json"
    path.write_text(text)
    with pytest.raises(RecipeError, match=r"broken\.json.*not valid JSON.*line 2, column"):
        load_recipe(path)


def test_missing_file_raises_recipe_error(tmp_path: Any) -> None:
    with pytest.raises(RecipeError, match="Cannot read recipe file"):
        load_recipe(tmp_path / "absent.json")


# --- saving -----------------------------------------------------------------------------------


def test_save_is_atomic_and_reads_back_equal(tmp_path: Any) -> None:
    recipe = parse_recipe(EXAMPLE)
    path = tmp_path / "recipe.json"
    save_recipe(default_recipe(), path)
    save_recipe(recipe, path)  # replaces the existing file
    assert os.listdir(tmp_path) == ["recipe.json"]  # no temporary file left behind
    assert load_recipe(path) == recipe
    assert path.read_text(encoding="utf-8") == dumps_recipe(recipe)


def test_failed_save_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "recipe.json"
    save_recipe(default_recipe(), path)
    before = path.read_text()

    def fail(src: str, dst: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(RecipeError, match="Cannot write recipe file.*Permission denied"):
        save_recipe(parse_recipe(EXAMPLE), path)
    assert os.listdir(tmp_path) == ["recipe.json"]
    assert path.read_text() == before


def test_save_into_missing_folder_raises_recipe_error(tmp_path: Any) -> None:
    with pytest.raises(RecipeError, match="Cannot write recipe file"):
        save_recipe(default_recipe(), tmp_path / "missing" / "recipe.json")
    assert os.listdir(tmp_path) == []


# --- schema and template ----------------------------------------------------------------------


def _schema() -> dict[str, Any]:
    text = resources.files("slimscope.core").joinpath("recipe.schema.json").read_text("utf-8")
    return json.loads(text)


def test_schema_is_valid_draft_2020_12_and_accepts_the_example() -> None:
    schema = _schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(EXAMPLE)


def test_template_lists_every_layer_with_an_inheriting_entry() -> None:
    names = ["conv1", "layer1.0.conv1", "fc", "conv1"]
    recipe = template_recipe(names)
    data = json.loads(dumps_recipe(recipe))
    assert data["layers"] == {"conv1": {}, "layer1.0.conv1": {}, "fc": {}}
    assert list(data["layers"]) == ["conv1", "layer1.0.conv1", "fc"]
    assert data["defaults"]["quantize"] == EXAMPLE["defaults"]["quantize"]
    assert data["defaults"]["prune"] is None  # quantization only: pruning is asked for (a preset, an edit)
    assert "ptq" not in data
    assert all(recipe.settings_for(name) == recipe.defaults for name in names)
    assert loads_recipe(dumps_recipe(recipe)) == recipe
    assert isinstance(recipe, Recipe) and recipe.unknown_layers(names) == []


def test_advanced_fields_round_trip_and_stay_quiet_at_their_defaults():
    from slimscope.core.recipe import PruneSpec, QuantSpec, parse_recipe

    recipe = parse_recipe(
        {
            "version": 1,
            "defaults": {
                "prune": {"structure": "channel", "sparsity": 0.3, "round_to": 8},
                "quantize": {"activation_symmetric": True},
            },
            "layers": {"fc": {"prune": {"structure": "unstructured", "sparsity": 0.9, "scope": "global"}}},
        }
    )
    assert recipe.settings_for("conv").prune == PruneSpec("channel", 0.3, None, "layer", 8)
    assert recipe.settings_for("fc").prune == PruneSpec("unstructured", 0.9, None, "global", 8)
    assert recipe.settings_for("conv").quantize == QuantSpec(activation_symmetric=True)
    assert parse_recipe(recipe.to_dict()) == recipe
    plain = parse_recipe({"version": 1, "defaults": {"prune": {"sparsity": 0.5}}})
    assert plain.to_dict()["defaults"]["prune"] == {"structure": "unstructured", "sparsity": 0.5}


def test_n_m_needs_no_sparsity_and_ignores_a_merged_one():
    from slimscope.core.recipe import parse_recipe

    recipe = parse_recipe(
        {
            "version": 1,
            "defaults": {"prune": {"sparsity": 0.5}},
            "layers": {"c": {"prune": {"structure": "2:4"}}},
        }
    )
    spec = recipe.settings_for("c").prune
    assert (spec.n, spec.m) == (2, 4)
    assert parse_recipe({"version": 1, "defaults": {"prune": {"structure": "1:4"}}}).defaults.prune.n == 1


def test_data_section_is_validated_and_kept():
    from slimscope.core.errors import RecipeError
    from slimscope.core.recipe import parse_recipe

    data = {
        "preprocess": {"resize": 256, "center_crop": 224, "mean": [0.5, 0.5, 0.5]},
        "calibration_samples": 64,
    }
    recipe = parse_recipe({"version": 1, "data": data})
    assert recipe.data == data
    assert parse_recipe(recipe.to_dict()).data == data
    assert recipe.with_data(None).data == {}
    with pytest.raises(RecipeError, match="data.preprocess.layout"):
        parse_recipe({"version": 1, "data": {"preprocess": {"layout": "CHW"}}})
    with pytest.raises(RecipeError, match="data.calibration_samples"):
        parse_recipe({"version": 1, "data": {"calibration_samples": 0}})


def test_a_layer_spec_keeps_its_scope_over_global_defaults():
    from slimscope.core.recipe import PruneSpec, parse_recipe

    recipe = parse_recipe({"version": 1, "defaults": {"prune": {"sparsity": 0.5, "scope": "global"}}})
    edited = recipe.with_layer("conv", prune=PruneSpec(sparsity=0.7, scope="layer"))
    assert edited.settings_for("conv").prune == PruneSpec(sparsity=0.7, scope="layer")
    assert parse_recipe(edited.to_dict()) == edited
