"""The `optimize` and `evaluate` verbs: read data and recipe, run the core tasks, print and write."""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections.abc import Callable
from pathlib import Path

from slimscope.core.errors import DatasetError

Runner = Callable  # cli._run: drives a task generator with a progress line


def add_optimize_arguments(verbs, model_arguments, limit_arguments) -> None:
    optimize = verbs.add_parser("optimize", help="apply a recipe and export the optimized ONNX model")
    model_arguments(optimize)
    optimize.add_argument("--recipe", type=Path, required=True, help="recipe JSON (see `slimscope recipe`)")
    optimize.add_argument(
        "-o", "--output", type=Path, required=True, help="where to write the optimized .onnx"
    )
    optimize.add_argument("--calib", type=Path, help="calibration data: .npz (x[, y]) or an image folder")
    optimize.add_argument(
        "--eval", type=Path, help="evaluation data: .npz or an image folder (labels optional)"
    )
    optimize.add_argument("--report", type=Path, help="also write the report as JSON to this file")
    optimize.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    optimize.add_argument("--no-latency", action="store_true", help="skip the latency measurement")

    evaluate = verbs.add_parser("evaluate", help="compare an optimized model with its original on data")
    evaluate.add_argument("original", type=Path)
    evaluate.add_argument("optimized", type=Path)
    evaluate.add_argument(
        "--input-shape", metavar="SHAPE",
        help="input shape such as 1x3x224x224 (comma-separated for several inputs); needed for a TorchScript file",
    )  # fmt: skip
    evaluate.add_argument(
        "--trust", action="store_true",
        help="allow opening TorchScript and .pt2 files, which can run code stored in them",
    )  # fmt: skip
    evaluate.add_argument("--data", type=Path, required=True, help=".npz or an image folder")
    evaluate.add_argument("--recipe", type=Path, help="a recipe whose data section says how to preprocess")
    evaluate.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    evaluate.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    evaluate.add_argument("--workers", type=int, help="compare the outputs in this many worker processes")
    evaluate.add_argument("--ray", metavar="ADDRESS",
                          help="compare the outputs on a Ray cluster: 'auto', 'local' or HOST:PORT")  # fmt: skip
    limit_arguments(evaluate)


def run_optimize(args: argparse.Namespace, run: Runner, worker) -> int:
    """Read the model and apply the recipe in `worker` (cli.CommandWorker: a crash or runaway there is a
    one-line error, and nothing is written), then evaluate and export here."""
    from slimscope.core.evaluate import layer_tensors, measure_footprint
    from slimscope.core.export import write_json
    from slimscope.core.loading.input_shapes import parse_input_shapes
    from slimscope.core.recipe_files import load_recipe
    from slimscope.core.user_files import CommandFiles

    shapes = parse_input_shapes(args.input_shape) if args.input_shape else None
    loaded = worker.load(args.model, trust=args.trust, input_shapes=shapes)
    protected = [loaded.source, *loaded.external_files]
    files = (CommandFiles().reads_model(loaded, "the model being optimized").reads(args.recipe, "the recipe")
             .reads(args.calib, "the calibration data").reads(args.eval, "the evaluation data"))  # fmt: skip
    files.destination(args.output, "the optimized model", model=True)  # before the work, not after it
    if args.report:
        files.destination(args.report, "the report")
    recipe = load_recipe(args.recipe)
    calib_path = args.calib or args.eval
    calib = _dataset(calib_path, recipe, loaded.model, worker) if calib_path else None
    result = worker.optimize(loaded, recipe, None if calib is None else calib.x)
    if calib is not None and args.calib is None:
        result.notes.append(
            "Calibrated on the evaluation data (no --calib given): accuracy on unseen data may be lower."
        )
    report: dict = {"source": str(loaded.source), "output": str(args.output)}
    if args.eval:
        from slimscope.core.evaluate import iter_evaluate

        data = (
            calib
            if calib is not None and args.eval == calib_path
            else _dataset(args.eval, recipe, loaded.model, worker)
        )
        from slimscope.core.inspection import count_macs
        from slimscope.core.loading.input_shapes import shapes_for_data

        at = shapes_for_data(loaded.input_shapes, data.sample_shape)  # free sizes: the data's
        macs = {"original": count_macs(loaded.model, at), "optimized": count_macs(result.model, at)}
        evaluation = run(iter_evaluate(loaded.model, result.model, data, latency=not args.no_latency,
                                       per_layer=layer_tensors(loaded.model), macs=macs))  # fmt: skip
        report |= evaluation.to_dict()
    else:
        from slimscope.core.evaluate.quality_warnings import judge
        from slimscope.core.evaluate.report import footprint_warnings

        before, after = measure_footprint(loaded.model), measure_footprint(result.model)
        report |= {key: {"original": getattr(before, attr), "optimized": getattr(after, attr)}
                   for key, attr in _FOOTPRINT.items()}  # fmt: skip
        sizes = {"original": before.size_bytes, "optimized": after.size_bytes}
        report["warnings"] = [
            *judge(sizes=sizes).warnings,
            *footprint_warnings({"original": before, "optimized": after}),
        ]
        report["warnings"].append("Not evaluated: give --eval DATA to measure what this cost and gained.")
    report |= _optimize_details(result)
    report["warnings"] = [*result.warnings, *report.get("warnings", [])]
    existed = args.output.exists()
    _export_with_report(result.model, args.output, protected, recipe, report)
    if args.report:
        try:
            write_json(report, args.report)
        except Exception:
            if not existed:  # a failed command leaves nothing half-done behind
                args.output.unlink(missing_ok=True)
            raise
    _print(report, args.json)
    return 0


def _export_with_report(model, output: Path, protected: list[Path], recipe, report: dict) -> None:
    """Export with the recipe and report embedded; the report's sizes are those of the file written.

    The report sits inside the file it measures, so sizes are settled by re-measuring until they agree
    (once or twice: only the digits of the sizes change).
    """
    from slimscope.core.evaluate.footprint import GZIP_LEVEL
    from slimscope.core.export import export_model

    def write() -> tuple[int, int]:
        metadata = {"slimscope.recipe": json.dumps(recipe.to_dict()), "slimscope.report": json.dumps(report)}
        export_model(model, output, protected=protected, metadata=metadata)
        data = output.read_bytes()
        return len(data), len(gzip.compress(data, compresslevel=GZIP_LEVEL, mtime=0))

    for _ in range(6):
        size, packed = write()
        if report["size_bytes"]["optimized"] == size and report["gzip_bytes"]["optimized"] == packed:
            return
        report["size_bytes"]["optimized"], report["gzip_bytes"]["optimized"] = size, packed
    # gzip can flip by a byte between two digit strings forever: the file keeps the report it embeds,
    # whose sizes are then within a few bytes of the truth.
    write()


def run_evaluate(args: argparse.Namespace, run: Runner, worker) -> int:
    from slimscope.core.evaluate import iter_evaluate, layer_tensors
    from slimscope.core.loading.input_shapes import parse_input_shapes
    from slimscope.core.recipe import default_recipe
    from slimscope.core.recipe_files import load_recipe

    shapes = parse_input_shapes(args.input_shape) if args.input_shape else None
    # both read in the worker process, one after the other
    original = worker.load(args.original, trust=args.trust, input_shapes=shapes)
    optimized = worker.load(args.optimized, trust=args.trust, input_shapes=shapes)
    recipe = load_recipe(args.recipe) if args.recipe else default_recipe()
    data = _dataset(args.data, recipe, original.model, worker)
    from slimscope.core.cli_sensitivity import _executor

    executor = _executor(args)  # None: in this process
    try:
        evaluation = run(iter_evaluate(original.model, optimized.model, data, latency=not args.no_latency,
                                       per_layer=layer_tensors(original.model), executor=executor))  # fmt: skip
    finally:
        if executor is not None:
            executor.close()
    report = {"original": str(args.original), "optimized": str(args.optimized)} | evaluation.to_dict()
    _print(report, args.json)
    return 0


_FOOTPRINT = {"size_bytes": "size_bytes", "gzip_bytes": "gzip_bytes", "nonzero_params": "nonzero_params"}


def _dataset(path: Path, recipe, model, worker):
    """The data at `path`, read in the command's worker process (within its memory and time limits)."""
    from slimscope.core.data import PreprocessSpec, fit_to_model

    if not path.exists():
        raise DatasetError(f"The data '{path}' does not exist.")
    preprocess = recipe.data.get("preprocess")
    PreprocessSpec.from_dict(preprocess)  # a preprocessing error is said before the worker starts reading
    return fit_to_model(worker.read_data(path, preprocess), model)


def _optimize_details(result) -> dict:
    details: dict = {"notes": result.notes, "forms": result.forms, "sparsity": result.sparsity}
    if result.dragged:
        details["dragged"] = result.dragged
    if result.effective_weight_bytes is not None:
        details["effective_weight_bytes"] = result.effective_weight_bytes
    return details


def _print(report: dict, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2, default=str) + "\n")
        return
    from slimscope.core.optimize_summary import format_summary

    sys.stdout.write(format_summary(report))
