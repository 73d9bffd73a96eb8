"""The `auto` verb: an automatic recipe within an accuracy budget, verified on the evaluation data."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from slimscope.core.errors import RecipeError, escaped_lines


def add_auto_arguments(verbs, model_arguments) -> None:
    from slimscope.core.auto_recipe import GOALS

    parser = verbs.add_parser(
        "auto", help="choose per-layer bits and channel pruning within an accuracy budget, verified"
    )
    model_arguments(parser)
    parser.add_argument("--data", type=Path, required=True, help="evaluation data: .npz or an image folder")
    parser.add_argument("--calib", type=Path, help="calibration data (default: the evaluation data)")
    parser.add_argument(
        "--max-drop", type=float, default=1.0,
        help="the largest accuracy drop allowed, in percentage points (top-1 agreement without labels; "
        "default 1.0); counted in whole evaluation samples, at least one, or on output SQNR when the model "
        "is not a classifier. Exit code 1 when no recipe meets it",
    )  # fmt: skip
    parser.add_argument("--goal", choices=GOALS, default="both", help="what to gain: size, latency or both")
    parser.add_argument("--samples", type=int, default=1000, help="evaluation samples used (default 1000)")
    parser.add_argument("-o", "--output", type=Path, help="write the recipe here (JSON; `optimize --recipe`)")
    parser.add_argument("--json", action="store_true", help="print the result and every candidate as JSON")


def run_auto(args: argparse.Namespace, run, load) -> int:
    from slimscope.core.auto_recipe import iter_auto_recipe
    from slimscope.core.cli_sensitivity import _dataset
    from slimscope.core.recipe import default_recipe
    from slimscope.core.recipe_files import save_recipe
    from slimscope.core.user_files import CommandFiles

    if not 0 <= args.max_drop < 100:
        raise RecipeError("--max-drop is in percentage points, from 0 to below 100.")
    if args.samples < 1:
        raise RecipeError("--samples must be at least 1.")
    loaded = load(args)
    if args.output:  # the recipe never goes over what the command reads
        files = CommandFiles().reads_model(loaded).reads(args.data, "the evaluation data")
        files.reads(args.calib, "the calibration data").destination(args.output, "the recipe")
    preprocess = default_recipe().data.get("preprocess")
    data = _dataset(args.data, preprocess, run, args.worker).head(args.samples)
    calib = _dataset(args.calib, preprocess, run, args.worker) if args.calib else None
    result = run(
        iter_auto_recipe(loaded, data, max_drop=args.max_drop / 100, goal=args.goal, calibration=calib)
    )
    if args.output and result.met:  # nothing is written when nothing met the budget
        save_recipe(result.recipe, args.output)
    if args.json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2, allow_nan=False, default=str) + "\n")
    else:
        sys.stdout.write(escaped_lines(format_auto(result, loaded.source.name, args.output)))
    return 0 if result.met else 1


def format_auto(result, source: str, output: Path | None) -> str:
    limits = result.limits
    lines = [f"Automatic recipe for {source} (goal: {result.goal}; {limits.text()}):",
             f"{'#':>3}  {'drop pts':>8}  {'size kB':>9}  {'latency ms':>10}  {'than float':>13}  {'layers':>6}  "
             "within"]  # fmt: skip
    for number, candidate in enumerate(result.candidates, start=1):
        latency = "—" if candidate.latency_ms is None else f"{candidate.latency_ms:.3f}"
        ratio = candidate.speed_ratio
        speed = "—" if ratio is None else f"{1 / ratio:.2f}x faster" if ratio <= 1 else f"{ratio:.2f}x slower"
        lines.append(
            f"{number:>3}  {100 * candidate.drop:>8.2f}  {candidate.size_bytes / 1000:>9.1f}  {latency:>10}  "
            f"{speed:>13}  {len(candidate.recipe.layers):>6}  {'yes' if candidate.within_budget else 'no'}"
        )
    lines += [f"Note: {note}" for note in result.notes]
    if not result.met:  # the last line says what happened
        return "\n".join([*lines, result.shortfall_text() + " No recipe was written."]) + "\n"
    chosen = f"Chosen: drop {limits.drop_text(result.drop)}, {len(result.recipe.layers)} layers set"
    lines.append(
        chosen + (f"; recipe written to {output}." if output else "; give -o FILE to save the recipe.")
    )
    return "\n".join(lines) + "\n"
