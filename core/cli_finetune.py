"""The `finetune` verb: retrain a model to a recipe (gradual pruning with fine-tuning, then QAT), headless.

It drives the same generator as the GUI's Retrain window, so a run can move to a bigger machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from slimscope.core.errors import escaped_lines


def add_finetune_arguments(verbs, model_arguments) -> None:
    parser = verbs.add_parser(
        "finetune",
        help="retrain to a recipe: gradual pruning with fine-tuning, then quantization-aware training",
    )
    model_arguments(parser)
    parser.add_argument(
        "--recipe", type=Path, required=True, help="recipe JSON; its 'training' section sets the schedule"
    )
    parser.add_argument(
        "--train", type=Path, required=True, help="labelled training data: .npz (x, y) or class folders"
    )
    parser.add_argument(
        "--val", type=Path, help="validation data (default: split from --train by the recipe's val_fraction)"
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="where to write the retrained .onnx")
    parser.add_argument("--calib", type=Path, help="calibration data (default: the first training samples)")
    parser.add_argument(
        "--checkpoints", type=Path, metavar="DIR", help="write a checkpoint here after every epoch"
    )
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --checkpoints")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def run_finetune(args: argparse.Namespace, run, load) -> int:
    from slimscope.core.errors import TrainingError
    from slimscope.core.export import export_model
    from slimscope.core.recipe_files import load_recipe
    from slimscope.core.train.finetune import iter_finetune
    from slimscope.core.train.train_data import open_training_data
    from slimscope.core.user_files import CommandFiles

    if args.resume and args.checkpoints is None:
        raise TrainingError("--resume needs --checkpoints DIR, the folder the interrupted run wrote to.")
    loaded = load(args)
    protected = [loaded.source, *loaded.external_files]
    files = (CommandFiles().reads_model(loaded, "the model being retrained").reads(args.recipe, "the recipe")
             .reads(args.train, "the training data").reads(args.val, "the validation data")
             .reads(args.calib, "the calibration data").reads_checkpoints(args.checkpoints))  # fmt: skip
    files.destination(args.output, "the retrained model", model=True)
    recipe = load_recipe(args.recipe)
    spec = recipe.training
    preprocess = recipe.data.get("preprocess")
    train = open_training_data(args.train, preprocess, loaded.model)
    if args.val is not None:
        val = open_training_data(args.val, preprocess, loaded.model)
    else:
        train, val = train.split(spec.val_fraction, spec.seed)
    calib = None
    if args.calib is not None:
        from slimscope.core.cli_sensitivity import _dataset

        calib = _dataset(args.calib, preprocess, run, args.worker).x
    task = iter_finetune(loaded, recipe, train, val, calibration=calib, checkpoint_dir=args.checkpoints,
                         resume=args.resume)  # fmt: skip
    result = run(_printing_epochs(task) if not args.json else task)
    metadata = {
        "slimscope.recipe": json.dumps(recipe.to_dict()),
        "slimscope.finetune": json.dumps(result.to_dict()),
    }
    export_model(result.model, args.output, protected=protected, metadata=metadata)
    if args.json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(escaped_lines(format_finetune(result, args.output, len(train), len(val))))
    return 0


def _printing_epochs(task):
    """Pass the task through, printing a line at each epoch's end (the progress line shows the rest)."""
    from slimscope.core.train.finetune import FinetuneBaseline, TrainingEvent

    try:
        while True:
            try:
                progress = next(task)
            except StopIteration as stop:
                return stop.value
            part = progress.partial
            if isinstance(part, FinetuneBaseline):
                print(f"Dense {part.dense_accuracy:.2%}, post-training {part.post_training_accuracy:.2%} "
                      f"({part.post_training_seconds:.1f} s)", file=sys.stderr)  # fmt: skip
            elif isinstance(part, TrainingEvent) and part.val_accuracy is not None:
                print(progress.message, file=sys.stderr)
            yield progress
    finally:
        task.close()


def format_finetune(result, output: Path, train_count: int, val_count: int) -> str:
    acc, secs = result.accuracy, result.seconds
    lines = [
        f"Retrained on {train_count} samples, validated on {val_count}{' (resumed)' if result.resumed else ''}:",
        f"{'':<16}{'accuracy':>10}{'time':>10}",
        f"{'dense':<16}{acc['dense']:>10.2%}{'':>10}",
        f"{'post-training':<16}{acc['post_training']:>10.2%}{secs['post_training']:>9.1f}s",
        f"{'retrained':<16}{acc['retrained']:>10.2%}{secs['retraining']:>9.1f}s",
    ]
    if result.simulated_accuracy is not None:
        lines.append(
            f"QAT simulated accuracy {result.simulated_accuracy:.2%} (onnxruntime int8: {acc['retrained']:.2%})"
        )
    lines += [f"Note: {note}" for note in result.notes]
    lines.append(f"Wrote {output}.")
    return "\n".join(lines) + "\n"
