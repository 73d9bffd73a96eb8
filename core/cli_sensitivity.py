"""The `sensitivity` verb: probe each layer alone with each setting and print the costs, worst first."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

from slimscope.core.errors import DatasetError, escaped_lines

Runner = Callable  # cli._run: drives a task generator with a progress line


def add_sensitivity_arguments(verbs, model_arguments) -> None:
    from slimscope.core.sensitivity import DEFAULT_MAX_SAMPLES
    from slimscope.core.sensitivity_probe import DEFAULT_SETTINGS

    keys = ",".join(setting.key for setting in DEFAULT_SETTINGS)
    parser = verbs.add_parser(
        "sensitivity", help="measure what each layer alone costs when pruned or quantized, worst first"
    )
    model_arguments(parser)
    parser.add_argument("--data", type=Path, required=True, help="evaluation data: .npz or an image folder")
    parser.add_argument("--calib", type=Path, help="calibration data for the quantization probes")
    parser.add_argument(
        "--settings", default=keys, help=f"comma-separated settings to probe (default: {keys})"
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=DEFAULT_MAX_SAMPLES,
        help=f"at most this many samples for the refined probes (default: {DEFAULT_MAX_SAMPLES}; quick "
        "probes use the first 64)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    parser.add_argument(
        "--ray", metavar="ADDRESS", help="run the probes on Ray: 'auto', 'local' or HOST:PORT of a head node"
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="worker processes on this machine (default: probes run in this process; with --ray: "
        "one per CPU of the cluster)",
    )


def run_sensitivity(args: argparse.Namespace, run: Runner, load) -> int:
    from slimscope.core.recipe import default_recipe
    from slimscope.core.sensitivity import iter_sensitivity
    from slimscope.core.sensitivity_probe import probe_settings

    if args.samples < 1:
        raise DatasetError("--samples must be at least 1.")
    settings = probe_settings(args.settings)  # a typo fails before the model is read
    loaded = load(args)
    preprocess = default_recipe().data.get("preprocess")
    data = _dataset(args.data, preprocess, run, args.worker)
    calib = _dataset(args.calib, preprocess, run, args.worker) if args.calib else None
    executor = _executor(args)
    try:
        report = run(iter_sensitivity(loaded, data, settings, calibration=calib, executor=executor,
                                      max_samples=args.samples))  # fmt: skip
    finally:
        if executor is not None:
            executor.close()
    if args.json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2, allow_nan=False) + "\n")
    else:
        sys.stdout.write(escaped_lines(format_sensitivity(report, loaded.source.name)))
    return 0


def _executor(args: argparse.Namespace):
    """The executor --workers and --ray ask for (None: in this process), never more workers than CPUs."""
    from slimscope.core.evaluate.latency import available_threads
    from slimscope.core.executor import LocalExecutor, RayExecutor

    if args.workers is not None and args.workers < 1:
        raise DatasetError("--workers must be at least 1.")
    if args.ray:
        executor = RayExecutor(args.ray, workers=args.workers)
        _say_if_capped(args.workers, executor.workers, "the Ray cluster has")
        return executor
    workers = args.workers
    if workers is not None:  # more processes than CPUs only add memory and switching (16 on 2: 4.4x slower)
        workers = min(workers, available_threads())
        _say_if_capped(args.workers, workers, "this computer has")
    if workers is not None and workers > 1:
        return LocalExecutor(workers)
    return None


def _say_if_capped(asked: int | None, used: int, where: str) -> None:
    if asked is not None and used < asked:
        print(f"slimscope: --workers {asked} is more than the {used} CPUs {where}; using {used}.",
              file=sys.stderr)  # fmt: skip


def _dataset(path: Path, preprocess, run, worker=None):
    """The data at `path`; read in `worker` (cli.CommandWorker: within the command's memory and time
    limits) when given, else in this process."""
    from slimscope.core.data import PreprocessSpec, iter_load_dataset

    if not path.exists():
        raise DatasetError(f"The data '{path}' does not exist.")
    if worker is not None:
        return worker.read_data(path, preprocess)
    return run(iter_load_dataset(path, PreprocessSpec.from_dict(preprocess)))


_WHAT = {
    "accuracy": "accuracy drop (points)",
    "agreement": "top-1 answers changed (%)",
    "sqnr": "output SQNR only (the output is not a classifier's)",
}


def format_sensitivity(report, source: str) -> str:
    """A table, most sensitive first: layer, setting, drop, output SQNR and samples measured on."""
    rows = report.rows
    width = max([len("layer"), *(len(row.layer) for row in rows)])
    setting_width = max([len("setting"), *(len(row.setting) for row in rows)])
    lines = [
        f"Sensitivity of {source}: each layer alone, everything else float; {_WHAT[report.metric]}.",
        f"{'layer':<{width}}  {'setting':<{setting_width}}  {'drop':>7}  {'SQNR dB':>8}  samples",
    ]
    for row in rows:
        drop = "—" if row.drop is None else f"{100 * row.drop:.1f}"
        sqnr = "—" if row.sqnr_db is None else "inf" if math.isinf(row.sqnr_db) else f"{row.sqnr_db:.1f}"
        note = "" if row.applied else "  (not applied)"
        lines.append(
            f"{row.layer:<{width}}  {row.setting:<{setting_width}}  {drop:>7}  {sqnr:>8}  {row.samples:>7}{note}"
        )
    lines += [f"Note: {note}" for note in report.notes]
    return "\n".join(lines) + "\n"
