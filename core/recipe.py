"""The recipe: how to prune and quantize a model, as defaults plus per-layer overrides (JSON).

`parse_recipe` is the one place a recipe is validated: first structurally against
`recipe.schema.json` (JSON Schema 2020-12, shipped as package data), then the checks JSON Schema
cannot express well. Every edit (`Recipe.with_layer`, `Recipe.with_defaults`) goes back through
it, so every `Recipe` it returns is valid. The format is documented in docs/recipe.md.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from functools import cache, cached_property
from importlib import resources
from typing import Any, Final, Literal, TypeAlias

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from slimscope.core.errors import RecipeError

RECIPE_VERSION = 1
_N_M = re.compile(r"([0-9]+):([0-9]+)")


class Unset(enum.Enum):
    """Sentinels for edits: KEEP leaves a setting as it is, INHERIT drops a layer's override."""

    KEEP = "keep"
    INHERIT = "inherit"


KEEP: Final = Unset.KEEP
INHERIT: Final = Unset.INHERIT


@dataclass(frozen=True)
class PruneSpec:
    """Pruning for one layer: `structure` plus exactly one of `sparsity` or `threshold`."""

    structure: str = "unstructured"  # "unstructured", "channel" or "N:M" such as "2:4"
    sparsity: float | None = None  # target fraction removed, in [0, 1)
    threshold: float | None = None  # absolute magnitude below which weights become zero
    # "layer": each layer reaches `sparsity` on its own; "global": one magnitude threshold across
    # every layer whose scope is global (with the same structure and sparsity), reaching it together.
    scope: Literal["layer", "global"] = "layer"
    round_to: int = 16  # channel pruning keeps channel counts at multiples of this (kernels like it)

    @property
    def n(self) -> int | None:
        """N of an N:M structure (non-zeros kept in each group), else None."""
        match = _N_M.fullmatch(self.structure)
        return int(match[1]) if match else None

    @property
    def m(self) -> int | None:
        """M of an N:M structure (weights in each group), else None."""
        match = _N_M.fullmatch(self.structure)
        return int(match[2]) if match else None


@dataclass(frozen=True)
class QuantSpec:
    """Quantization for one layer."""

    weight_bits: int = 8  # 2-8 or 16
    activation_bits: int = 8  # 8 or 16
    granularity: Literal["per_channel", "per_tensor"] = "per_channel"
    symmetric: bool = True  # weights
    calibration: Literal["minmax", "percentile", "entropy"] = "minmax"
    # Activations default to asymmetric uint8: onnxruntime's fast int8 kernels (U8S8) need it.
    activation_symmetric: bool = False


@dataclass(frozen=True)
class PtqSpec:
    """Whole-model aids to post-training quantization (the recipe's "ptq" section; all off by default)."""

    equalize: bool = False  # cross-layer equalization of conv pairs before calibration
    relu6_to_relu: bool = False  # let equalization cross ReLU6 by making it ReLU (changes the float model)
    bias_correction: bool = False  # move each quantized layer's mean output error into its bias
    keep_first_last: Literal["float", "int16"] | None = None  # the first and last layers' precision


@dataclass(frozen=True)
class LayerSettings:
    """What happens to one layer; None means the technique is not applied."""

    prune: PruneSpec | None
    quantize: QuantSpec | None


Fields: TypeAlias = tuple[tuple[str, Any], ...]
"""The fields an override gives, in the spec's field order."""


@dataclass(frozen=True)
class LayerOverride:
    """One layer's entry: per technique INHERIT (key absent), None (disabled) or given fields."""

    prune: Fields | None | Literal[Unset.INHERIT] = INHERIT
    quantize: Fields | None | Literal[Unset.INHERIT] = INHERIT

    def to_dict(self) -> dict[str, Any]:
        entry = {"prune": self.prune, "quantize": self.quantize}
        return {k: v if v is None else dict(v) for k, v in entry.items() if v is not INHERIT}


@dataclass(frozen=True)
class Recipe:
    """Defaults plus per-layer overrides (in file order). Build it with `parse_recipe`."""

    defaults: LayerSettings
    layers: tuple[tuple[str, LayerOverride], ...] = ()
    data_json: str = ""  # the "data" section (preprocessing, calibration size) as canonical JSON
    ptq: PtqSpec = PtqSpec()  # the "ptq" section
    training_json: str = ""  # the "training" section (retraining settings) as canonical JSON

    @property
    def training(self) -> Any:
        """The "training" section as a `train.train_spec.TrainSpec` (defaults when absent)."""
        from slimscope.core.train.train_spec import TrainSpec

        return TrainSpec.from_dict(json.loads(self.training_json) if self.training_json else None)

    def with_training(self, training: Any) -> Recipe:
        """A new recipe with the "training" section replaced by a TrainSpec (defaults drop it)."""
        section = training.to_dict()
        return replace(self, training_json=json.dumps(section, sort_keys=True) if section else "")

    @property
    def data(self) -> dict[str, Any]:
        """The data section: {"preprocess": {...}, "calibration_samples": n}, {} when absent."""
        return json.loads(self.data_json) if self.data_json else {}

    def with_data(self, data: Mapping[str, Any] | None) -> Recipe:
        """A new recipe with the data section replaced (None removes it)."""
        raw = self.to_dict()
        raw.pop("data", None)
        if data:
            raw["data"] = dict(data)
        return parse_recipe(raw)

    @cached_property
    def _overrides(self) -> dict[str, LayerOverride]:
        return dict(self.layers)

    def override_for(self, layer_name: str) -> LayerOverride | None:
        """The layer's entry as written in the recipe, or None if it has none."""
        return self._overrides.get(layer_name)

    def settings_for(self, layer_name: str) -> LayerSettings:
        """The layer's settings: its override merged field by field over the defaults."""
        override = self.override_for(layer_name) or LayerOverride()
        return LayerSettings(
            prune=_merge(self.defaults.prune, override.prune, PruneSpec),
            quantize=_merge(self.defaults.quantize, override.quantize, QuantSpec),
        )

    def unknown_layers(self, layer_names: Sequence[str]) -> list[str]:
        """Names of overridden layers that are not in `layer_names` (the model's layers)."""
        known = set(layer_names)
        return [name for name, _ in self.layers if name not in known]

    def check_layers(self, layer_names: Sequence[str]) -> None:
        """Raise RecipeError naming the overridden layers the model does not have."""
        unknown = self.unknown_layers(layer_names)
        if unknown:
            more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
            shown = ", ".join(repr(n) for n in unknown[:3]) + more
            raise RecipeError(f"The recipe names layers this model does not have: {shown}.", layer=unknown[0])

    def with_layer(
        self,
        name: str,
        prune: PruneSpec | Mapping[str, Any] | None | Unset = KEEP,
        quantize: QuantSpec | Mapping[str, Any] | None | Unset = KEEP,
    ) -> Recipe:
        """A new recipe with `name`'s override changed: a spec or a mapping of fields to merge
        over the defaults, None to disable, INHERIT to follow the defaults, KEEP to leave as is."""
        data = self.to_dict()
        entry = data["layers"].setdefault(name, {})
        for key, value in (("prune", prune), ("quantize", quantize)):
            if value is INHERIT:
                entry.pop(key, None)
            elif value is not KEEP:
                entry[key] = _to_json(value, quiet=False)  # an override keeps every field it states
        return parse_recipe(data)

    def with_defaults(
        self,
        prune: PruneSpec | None | Literal[Unset.KEEP] = KEEP,
        quantize: QuantSpec | None | Literal[Unset.KEEP] = KEEP,
    ) -> Recipe:
        """A new recipe with the defaults changed (None: the technique is off by default)."""
        data = self.to_dict()
        for key, value in (("prune", prune), ("quantize", quantize)):
            if value is not KEEP:
                data["defaults"][key] = _to_json(value)
        return parse_recipe(data)

    def with_ptq(self, ptq: PtqSpec) -> Recipe:
        """A new recipe with the "ptq" section replaced."""
        data = self.to_dict()
        data.pop("ptq", None)
        if ptq != PtqSpec():
            data["ptq"] = asdict(ptq)
        return parse_recipe(data)

    def without_layer(self, name: str) -> Recipe:
        """A new recipe without `name`'s entry (the layer follows the defaults)."""
        return replace(self, layers=tuple(item for item in self.layers if item[0] != name))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: defaults in full, each override with only the fields it gives."""
        result = {
            "version": RECIPE_VERSION,
            "defaults": {key: _to_json(getattr(self.defaults, key)) for key in _SPECS},
            "layers": {name: override.to_dict() for name, override in self.layers},
        }
        if self.data_json:
            result["data"] = self.data
        if self.ptq != PtqSpec():  # written only when used, so older Slimscopes read everyday recipes
            result["ptq"] = {k: v for k, v in asdict(self.ptq).items() if v != getattr(PtqSpec(), k)}
        if self.training_json:
            result["training"] = json.loads(self.training_json)
        return result


def default_recipe() -> Recipe:
    """Quantization only (the `recipe_presets.DEFAULT_PRESET` preset): int8 per-channel weights, uint8
    activations. Pruning is something the user asks for (a preset or an edit): on a pretrained ImageNet
    classifier, 50 % pruning + int8 as a default gave 0.0 % top-1 agreement."""
    from slimscope.core.recipe_presets import DEFAULT_PRESET, preset_recipe  # it builds on this module

    return preset_recipe(DEFAULT_PRESET)


def template_recipe(layer_names: Sequence[str]) -> Recipe:
    """The default recipe with an empty (inheriting) entry for every layer, ready to edit."""
    names = dict.fromkeys(layer_names)  # drops repeats, keeps order
    return replace(default_recipe(), layers=tuple((name, LayerOverride()) for name in names))


def parse_recipe(data: Mapping[str, Any]) -> Recipe:
    """Validate recipe data (parsed JSON) and build the recipe; raises RecipeError."""
    error = best_match(_validator().iter_errors(data))
    if error is not None:
        raise _translate(error)
    raw_defaults = data.get("defaults", {})
    defaults = LayerSettings(**{key: _spec(key, raw_defaults.get(key)) for key in _SPECS})
    _check(defaults, None)
    layers = tuple(
        (name, LayerOverride(**{k: _fields(k, v) for k, v in entry.items()}))
        for name, entry in data.get("layers", {}).items()
    )
    data_section = data.get("data")
    _check_preprocess((data_section or {}).get("preprocess") or {})
    data_json = json.dumps(data_section, sort_keys=True) if data_section else ""
    ptq = PtqSpec(**data.get("ptq", {}))
    if ptq.relu6_to_relu and not ptq.equalize:
        raise _error("only applies with 'equalize': true", None, "ptq.relu6_to_relu", False)
    training = data.get("training")
    training_json = json.dumps(training, sort_keys=True) if training else ""
    recipe = Recipe(defaults, layers, data_json, ptq, training_json)
    for name, _ in layers:
        _check(recipe.settings_for(name), name)
    return recipe


# --- helpers -------------------------------------------------------------------------------

_SPECS: dict[str, type[Any]] = {"prune": PruneSpec, "quantize": QuantSpec}
_NUMBER: dict[str, type] = {"sparsity": float, "threshold": float}
_NUMBER |= {"weight_bits": int, "activation_bits": int, "round_to": int}

# What each field must be, for messages; schema errors are translated through this table.
_EXPECTED = {
    "": "must be a JSON object",
    "version": f"must be {RECIPE_VERSION} (the only recipe version this Slimscope reads)",
    "defaults": "must be an object with 'prune' and/or 'quantize'",
    "layers": "must be an object mapping layer names to overrides",
    "entry": "must be an object with 'prune' and/or 'quantize' ({} follows the defaults)",
    "prune": "must be an object or null",
    "prune.structure": "must be 'unstructured', 'channel' or 'N:M' with 0 < N < M <= 16",
    "prune.sparsity": "must be a number in [0, 1)",
    "prune.threshold": "must be a number >= 0",
    "prune.scope": "must be 'layer' or 'global'",
    "prune.round_to": "must be an integer from 1 to 256",
    "quantize.activation_symmetric": "must be true or false",
    "data": "must be an object with 'preprocess' and/or 'calibration_samples'",
    "ptq": "must be an object with 'equalize', 'relu6_to_relu', 'bias_correction', 'keep_first_last'",
    "ptq.equalize": "must be true or false",
    "ptq.relu6_to_relu": "must be true or false",
    "ptq.bias_correction": "must be true or false",
    "ptq.keep_first_last": "must be 'float', 'int16' or null",
    "quantize": "must be an object or null",
    "training": "must be an object (see docs/recipe.md for its fields)",
    "training.steps": "must be an integer from 1 to 100",
    "training.schedule": "must be 'cubic' or 'linear'",
    "training.epochs_per_step": "must be an integer >= 0",
    "training.final_epochs": "must be an integer >= 0",
    "training.batch_size": "must be an integer >= 1",
    "training.learning_rate": "must be a number > 0 and <= 10",
    "training.optimizer": "must be 'sgd' or 'adam'",
    "training.weight_decay": "must be a number from 0 to 1",
    "training.lr_schedule": "must be 'cosine' or 'constant'",
    "training.patience": "must be an integer >= 1",
    "training.val_fraction": "must be a number > 0 and <= 0.5",
    "training.max_batches_per_epoch": "must be an integer >= 1 or null",
    "training.seed": "must be an integer >= 0",
    "training.augment.shift": "must be an integer from 0 to 64",
    "training.augment.flip": "must be true or false",
    "training.augment.noise": "must be a number from 0 to 10",
    "training.qat.epochs": "must be an integer >= 0",
    "training.qat.learning_rate": "must be a number > 0 and <= 10",
    "training.qat.ranges": "must be 'calibrated' or 'learned'",
    "quantize.weight_bits": "must be an integer from 2 to 8, or 16",
    "quantize.activation_bits": "must be 8 or 16",
    "quantize.granularity": "must be 'per_channel' or 'per_tensor'",
    "quantize.symmetric": "must be true or false",
    "quantize.calibration": "must be 'minmax', 'percentile' or 'entropy'",
}


@cache
def _validator() -> Draft202012Validator:
    text = resources.files("slimscope.core").joinpath("recipe.schema.json").read_text("utf-8")
    return Draft202012Validator(json.loads(text))


def _error(problem: str, layer: str | None, field: str | None, in_defaults: bool) -> RecipeError:
    """One sentence: `Recipe layer 'fc2', field 'prune.sparsity': <problem>.`"""
    where = " defaults" if in_defaults else f" layer {layer!r}" if layer is not None else ""
    if field:
        where += f"{',' if where else ''} field {field!r}"
    layer = "defaults" if in_defaults else layer
    return RecipeError(f"Recipe{where}: {problem}.", layer=layer, field=field)


def _translate(error: ValidationError) -> RecipeError:
    """Turn the best jsonschema error into one sentence naming the layer and the field."""
    path = [str(part) for part in error.absolute_path]
    in_defaults = path[:1] == ["defaults"]
    layer = path[1] if path[:1] == ["layers"] and len(path) > 1 else None
    rest = path[1:] if in_defaults else path[2:] if layer is not None else path
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = list(error.schema.get("properties", {}))
        unknown = next(key for key in error.instance if key not in allowed)
        field = ".".join([*rest, unknown])
        kind = "key" if not path else "field"
        problem = f"unknown {kind} (allowed: {', '.join(map(repr, allowed))})"
    elif error.validator == "required":
        field, problem = ".".join([*rest, error.validator_value[0]]), "is missing"
    else:
        field = ".".join(rest)
        key = "entry" if layer is not None and not field else field
        key = "defaults" if in_defaults and not field else key
        problem = f"{_EXPECTED.get(key, 'is invalid')}, got {_show(error.instance)}"
    return _error(problem, layer, field or None, in_defaults)


def _show(value: Any) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= 40 else text[:39] + "…"


def _check(settings: LayerSettings, layer: str | None) -> None:
    """The checks JSON Schema cannot express well, on a layer's merged settings."""
    spec = settings.prune
    if spec is None:
        return

    def fail(problem: str, field: str) -> RecipeError:
        return _error(problem, layer, field, in_defaults=layer is None)

    for name in ("sparsity", "threshold"):
        value = getattr(spec, name)
        if value is not None and not math.isfinite(value):
            raise fail(f"{_EXPECTED['prune.' + name]}, got {_show(value)}", f"prune.{name}")
    if spec.structure not in ("unstructured", "channel"):
        n, m = spec.n, spec.m
        if n is None or m is None or not 0 < n < m <= 16:
            got = _show(spec.structure)
            raise fail(f"{_EXPECTED['prune.structure']}, got {got}", "prune.structure")
    if spec.n is not None:
        return  # N:M fixes the sparsity itself; a sparsity or threshold merged from defaults is ignored
    if spec.sparsity is None and spec.threshold is None:
        why = "" if layer is None else ", since the defaults do not prune"
        raise fail(f"needs 'sparsity' or 'threshold'{why}", "prune")
    if spec.sparsity is not None and spec.threshold is not None:
        raise fail("give either 'sparsity' or 'threshold', not both", "prune")
    if spec.structure == "channel" and spec.threshold is not None:
        raise fail(
            "cannot be used with structure 'channel', which takes 'sparsity' "
            "(the fraction of output channels to remove)",
            "prune.threshold",
        )


_FLOAT32_TINY = 1.1754943508222875e-38  # numpy.finfo(float32).tiny: below it precision goes, then 0
_FLOAT32_MAX = 3.4028234663852886e38  # numpy.finfo(float32).max


def _check_preprocess(preprocess: Mapping[str, Any]) -> None:
    """Numbers JSON Schema lets through (Infinity, NaN, 1e-320) that would make every input NaN or
    infinite: the model would then calibrate on nothing and fail far from the cause."""

    def fail(key: str, problem: str) -> RecipeError:
        return _error(f"{problem}, got {_show(preprocess[key])}", None, f"data.preprocess.{key}", False)

    given = {k: preprocess[k] if isinstance(preprocess[k], list) else [preprocess[k]]
             for k in ("scale", "mean", "std") if k in preprocess}  # fmt: skip
    for key, values in given.items():
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            raise fail(key, "must hold finite numbers")
    for key in ("scale", "std"):
        if any(v < _FLOAT32_TINY for v in given.get(key, [])):
            raise fail(key, f"must be at least {_FLOAT32_TINY:.2g} (smaller numbers vanish in float32)")
    scale, mean, std = (given.get(k, [d]) for k, d in (("scale", 1 / 255), ("mean", 0.0), ("std", 1.0)))
    largest = (255 * max(scale) + max(abs(m) for m in mean)) / min(std)
    if largest > _FLOAT32_MAX:
        raise fail("std", f"makes pixel values as large as {largest:.2g}, beyond float32's range")


def _fields(technique: str, raw: Mapping[str, Any] | None) -> Fields | None:
    """The fields given, in the spec's field order, numbers as the field's type (8.0 -> 8)."""
    if raw is None:
        return None
    names = [f.name for f in fields(_SPECS[technique]) if f.name in raw]
    return tuple((k, _NUMBER[k](raw[k]) if k in _NUMBER else raw[k]) for k in names)


def _spec(technique: str, raw: Mapping[str, Any] | None) -> Any:
    given = _fields(technique, raw)
    return None if given is None else _SPECS[technique](**dict(given))


def _merge(base: Any, override: Fields | None | Literal[Unset.INHERIT], cls: type[Any]) -> Any:
    """Field-by-field merge; giving `sparsity` or `threshold` replaces the other."""
    if override is INHERIT:
        return base
    if override is None:
        return None
    values = dict(override)
    if "sparsity" in values or "threshold" in values:
        values = {"sparsity": None, "threshold": None} | values
    return replace(base if base is not None else cls(), **values)


# Advanced fields are written only when they differ from their default, so that everyday recipes
# stay short and read like the documented example.
_QUIET_DEFAULTS = {"scope": "layer", "round_to": 16, "activation_symmetric": False}


def _to_json(value: Any, quiet: bool = True) -> dict[str, Any] | None:
    """A spec as JSON fields; `quiet` leaves out advanced fields at their default (for the defaults
    section, where leaving them out means the same; an override must keep them, or the defaults
    would fill them back in)."""
    if value is None or isinstance(value, Mapping):
        return None if value is None else dict(value)
    return {
        k: v
        for k, v in asdict(value).items()
        if v is not None and not (quiet and k in _QUIET_DEFAULTS and _QUIET_DEFAULTS[k] == v)
    }
