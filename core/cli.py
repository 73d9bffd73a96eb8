"""The `slimscope` command line. Every verb drives the same core functions the GUI uses.

Bad input prints one line on stderr and exits with code 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from slimscope.core.errors import SlimscopeError
from slimscope.core.tasks import Progress, Task, run_sync

EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slimscope",
        description="See inside a vision model and make it smaller and faster. "
        "With no command, shows the bundled demo model.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks instead of one-line errors")
    verbs = parser.add_subparsers(dest="verb", metavar="COMMAND")

    inspect = verbs.add_parser("inspect", help="list a model's layers with their weight statistics")
    _model_arguments(inspect)
    inspect.add_argument("--json", action="store_true", help="print the whole layer view as JSON")

    gui = verbs.add_parser("gui", help="open the desktop window (on the demo model when no file is given)")
    gui.add_argument("model", type=Path, nargs="?", help="an .onnx, TorchScript (.pt/.ts) or .pt2 file")
    gui.add_argument("--trust", action="store_true", help="open TorchScript and .pt2 files without asking")

    recipe = verbs.add_parser("recipe", help="print a recipe template that lists every layer")
    _model_arguments(recipe)
    recipe.add_argument("-o", "--output", type=Path, help="write the recipe to this file instead of stdout")

    from slimscope.core.cli_optimize import add_optimize_arguments

    add_optimize_arguments(verbs, _model_arguments)
    from slimscope.core.cli_sensitivity import add_sensitivity_arguments

    add_sensitivity_arguments(verbs, _model_arguments)
    from slimscope.core.cli_auto import add_auto_arguments

    add_auto_arguments(verbs, _model_arguments)
    from slimscope.core.cli_finetune import add_finetune_arguments

    add_finetune_arguments(verbs, _model_arguments)
    return parser


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", type=Path, help="an .onnx, TorchScript (.pt/.ts) or torch.export (.pt2) file"
    )
    parser.add_argument(
        "--input-shape",
        metavar="SHAPE",
        help="input shape such as 1x3x224x224 (comma-separated for several inputs); needed when the "
        "file does not record it",
    )
    parser.add_argument(
        "--trust",
        action="store_true",
        help="allow opening TorchScript and .pt2 files, which can run code stored in them",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.verb is None:
            return _show_demo()
        return _VERBS[args.verb](args)
    except SlimscopeError as exc:
        if args.debug:
            raise
        print(f"slimscope: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("slimscope: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or a library failing on odd input: still one line, not a traceback
        if args.debug:
            raise
        print(f"slimscope: error: unexpected {type(exc).__name__}: {exc} (run with --debug for details)",
              file=sys.stderr)  # fmt: skip
        return EXIT_BAD_INPUT


def _run(task: Task):
    """Run a task with a one-line progress display on stderr when it is a terminal."""
    interactive = sys.stderr.isatty()

    def show(progress: Progress) -> None:
        percent = f"{progress.fraction:4.0%}" if progress.fraction is not None else "    "
        sys.stderr.write(f"\r\x1b[K{percent} {progress.message[:70]}")
        sys.stderr.flush()

    try:
        return run_sync(task, show if interactive else None)
    except KeyboardInterrupt:
        task.close()  # Ctrl-C cancels: the task's cleanup runs (child processes, temporary files)
        raise
    finally:
        if interactive:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _load(args: argparse.Namespace):
    from slimscope.core.loading import iter_load_model
    from slimscope.core.loading.input_shapes import parse_input_shapes

    shapes = parse_input_shapes(args.input_shape) if args.input_shape else None
    return _run(iter_load_model(args.model, trust=args.trust, input_shapes=shapes))


def _inspect(args: argparse.Namespace) -> int:
    from slimscope.core.inspection import iter_inspect, report_to_dict

    loaded = _load(args)
    report = _run(iter_inspect(loaded))
    if args.json:
        import orjson

        data = orjson.dumps(
            report_to_dict(report), option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE
        )
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        from slimscope.core.inspection_table import format_report

        sys.stdout.write(format_report(report))
    return 0


def _recipe(args: argparse.Namespace) -> int:
    from slimscope.core.inspection import iter_inspect
    from slimscope.core.recipe import dumps_recipe, save_recipe, template_recipe

    report = _run(iter_inspect(_load(args), with_stats=False))
    recipe = template_recipe([layer.name for layer in report.layers])
    if args.output:
        save_recipe(recipe, args.output)
    else:
        sys.stdout.write(dumps_recipe(recipe) + "\n")
    return 0


def _show_demo() -> int:
    """The window on the demo model; the demo table on stdout when piped, headless or without Qt."""
    from slimscope.resources import DEMO_MODEL

    if sys.stdout.isatty() and _has_display():
        code = _open_window(None, trust=False)
        if code is not None:
            return code
        print("slimscope: the desktop window needs PySide6, pyqtgraph and superqt; showing the demo "
              "model as text.", file=sys.stderr)  # fmt: skip
    print(f"Slimscope {_version()} — showing the demo model (`slimscope gui` opens the window).\n")
    return _inspect(argparse.Namespace(model=DEMO_MODEL, input_shape=None, trust=False, json=False))


def _gui(args: argparse.Namespace) -> int:
    code = _open_window(args.model, trust=args.trust)
    if code is None:
        raise SlimscopeError("The desktop window needs PySide6, pyqtgraph and superqt; install them.")
    return code


_QT_PACKAGES = {"PySide6", "shiboken6", "pyqtgraph", "superqt", "qtpy"}


def _open_window(model: Path | None, *, trust: bool) -> int | None:
    """Run the GUI; None when its Qt packages are not installed. Imported by name: core never imports Qt."""
    import importlib

    try:
        app = importlib.import_module("slimscope.gui.app")
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in _QT_PACKAGES:
            raise
        return None
    return app.run_app(model, trust=trust)


def _has_display() -> bool:
    import os

    if not sys.platform.startswith("linux"):
        return True
    return any(os.environ.get(name) for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))


def _version() -> str:
    from slimscope import __version__

    return __version__


def _optimize(args: argparse.Namespace) -> int:
    from slimscope.core.cli_optimize import run_optimize

    return run_optimize(args, _run, _load)


def _evaluate(args: argparse.Namespace) -> int:
    from slimscope.core.cli_optimize import run_evaluate

    return run_evaluate(args, _run)


def _sensitivity(args: argparse.Namespace) -> int:
    from slimscope.core.cli_sensitivity import run_sensitivity

    return run_sensitivity(args, _run, _load)


def _auto(args: argparse.Namespace) -> int:
    from slimscope.core.cli_auto import run_auto

    return run_auto(args, _run, _load)


def _finetune(args: argparse.Namespace) -> int:
    from slimscope.core.cli_finetune import run_finetune

    return run_finetune(args, _run, _load)


_VERBS = {"inspect": _inspect, "gui": _gui, "recipe": _recipe, "optimize": _optimize, "evaluate": _evaluate,
          "sensitivity": _sensitivity, "auto": _auto, "finetune": _finetune}  # fmt: skip
