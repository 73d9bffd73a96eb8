"""The `slimscope` command line. Every verb drives the same core functions the GUI uses.

Bad input prints one line on stderr and exits with code 2; `--debug` shows the traceback instead.
Model files are read, and recipes applied, in one worker process per command with a memory and a time
limit (`CommandWorker`), so that a file that crashes or exhausts a native library is a one-line error too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from slimscope.core.errors import SlimscopeError, one_line
from slimscope.core.tasks import Progress, Task, run_sync

EXIT_BAD_INPUT = 2
# The verbs that run onnxruntime in the command's own process (the others run it in the worker only).
_RUNTIME_VERBS = frozenset({"optimize", "evaluate", "sensitivity", "auto", "finetune"})
# The worker jobs the verbs run, by what they do: "open" (read and inspect), "load", "optimize". A test
# names a job of its own here ("module:function") to see what a crash in one does to a command.
WORKER_JOBS = {"open": "open", "load": "load", "optimize": "optimize", "data": "data"}


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
    recipe.add_argument("--preset", metavar="NAME", help=_presets_help())

    from slimscope.core.cli_optimize import add_optimize_arguments

    add_optimize_arguments(verbs, _model_arguments, limit_arguments)
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
    limit_arguments(parser)


def limit_arguments(parser: argparse.ArgumentParser) -> None:
    """--memory-limit and --time-limit: the worker process that reads files and applies recipes."""
    from slimscope.core.isolation import DEFAULT_MEMORY_LIMIT, DEFAULT_OPTIMIZE_TIME_LIMIT_S
    from slimscope.core.isolation import DEFAULT_READ_TIME_LIMIT_S as READ

    memory = "none" if DEFAULT_MEMORY_LIMIT is None else f"{DEFAULT_MEMORY_LIMIT / 2**30:.1f}"
    parser.add_argument(
        "--memory-limit", type=_not_negative, metavar="GIB",
        help="stop reading a model file (and, for optimize, applying the recipe) once its worker process "
        f"reserves this many GiB (default here: {memory}, the larger of 8 GiB and 3/4 of the RAM, at most "
        "RAM + swap; 0: no limit)",
    )  # fmt: skip
    parser.add_argument(
        "--time-limit", type=_not_negative, metavar="SECONDS",
        help=f"stop reading a model file (and, for optimize, applying the recipe) after this many seconds "
        f"(default: {READ:g} to read, {DEFAULT_OPTIMIZE_TIME_LIMIT_S:g} to optimize; 0: no limit)",
    )  # fmt: skip


def _not_negative(text: str) -> float:
    value = float(text)  # argparse turns the ValueError of a non-number into a usage error
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number of at least 0 (0: no limit)")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.debug:  # libraries' warnings and log lines stay off the terminal (core/quiet_output.py)
        from slimscope.core.quiet_output import quiet_library_output

        quiet_library_output(runtime=args.verb in _RUNTIME_VERBS)
    from slimscope.core.user_files import (
        absolute_arguments,
        noticed_interrupts,
        private_working_directory,
        refuse_special_outputs,
    )

    absolute_arguments(args)  # the command (and the window) then works in a private folder of its own
    args.worker = CommandWorker(getattr(args, "memory_limit", None), getattr(args, "time_limit", None), _run)
    try:
        with private_working_directory(), noticed_interrupts() as noticed:
            refuse_special_outputs(args)
            code = _show_demo(args.worker) if args.verb is None else _VERBS[args.verb](args)
        if noticed:  # a Ctrl-C that a library swallowed (Python drops one raised in a finalizer)
            raise KeyboardInterrupt
        return code
    except SlimscopeError as exc:
        if args.debug:
            raise
        print(f"slimscope: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("slimscope: interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug or a library failing on odd input: still one line, not a traceback
        if args.debug:
            raise
        # The library's own words (an exception type, a protobuf message) mean nothing to the user: say
        # what happened in ours, and keep theirs for --debug and a bug report.
        print("slimscope: error: an unexpected problem inside Slimscope or a library it uses stopped this command "
              "(a bug worth reporting); run it again with --debug to see the details.", file=sys.stderr)  # fmt: skip
        return EXIT_BAD_INPUT
    finally:
        args.worker.close()


class CommandWorker:
    """The command's one worker process (started at its first job, closed when the command ends): model
    files are read, and recipes applied, there, within the command line's memory and time limits."""

    def __init__(self, memory_gib: float | None, time_limit: float | None, run) -> None:
        from slimscope.core.isolation import DEFAULT_MEMORY_LIMIT, GIB

        if memory_gib is None:
            self.memory_limit = DEFAULT_MEMORY_LIMIT
        else:
            self.memory_limit = round(memory_gib * GIB) if memory_gib > 0 else None
        self.time_limit = time_limit  # None: each job's default; 0: none
        self._run = run
        self._process = None

    def open(self, path: Path, *, trust: bool = False, input_shapes=None):
        """Read and inspect a model file: its `ModelReport` (`.loaded` is the model)."""
        return self._job("open", path, trust, input_shapes)

    def load(self, path: Path, *, trust: bool = False, input_shapes=None):
        """Read a model file: its `LoadedModel`, which the worker keeps for `optimize`."""
        return self._job("load", path, trust, input_shapes)

    def read_data(self, path: Path, preprocess=None, limit: int | None = None):
        """Read evaluation or calibration data (its `Dataset`, not yet fitted to a model): decoding the
        user's files runs within the same limits as reading models."""
        return self._job("data", path, preprocess, limit)

    def optimize(self, loaded, recipe, calibration=None):
        """Apply `recipe` to `loaded` (calibration: model-ready samples); the `OptimizeResult`."""
        self._worker().set_model(loaded)  # the model the worker read last: not sent again
        return self._job("optimize", recipe, calibration)

    def close(self) -> None:
        if self._process is not None:
            self._process.close(timeout=1.0)  # after Ctrl-C the job may still be in a native call
            self._process = None

    def _job(self, purpose: str, *args):
        from slimscope.core.isolation import (
            DEFAULT_OPTIMIZE_TIME_LIMIT_S,
            DEFAULT_READ_TIME_LIMIT_S,
            activity_for,
        )

        timeout = self.time_limit
        if timeout is None:
            timeout = DEFAULT_OPTIMIZE_TIME_LIMIT_S if purpose == "optimize" else DEFAULT_READ_TIME_LIMIT_S
        job = WORKER_JOBS[purpose]
        activity = activity_for(purpose, args)
        return self._run(self._worker().run(job, *args, timeout=timeout, activity=activity))

    def _worker(self):
        if self._process is None:
            from slimscope.core.task_process import TaskProcess

            self._process = TaskProcess(
                "slimscope-cli", memory_limit=self.memory_limit, echo_tracebacks=False
            )
        return self._process


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


def _shapes(args: argparse.Namespace):
    from slimscope.core.loading.input_shapes import parse_input_shapes

    return parse_input_shapes(args.input_shape) if args.input_shape else None


def _load(args: argparse.Namespace):
    """The model file of the command, read in its worker process."""
    return args.worker.load(args.model, trust=args.trust, input_shapes=_shapes(args))


def _inspect(args: argparse.Namespace) -> int:
    from slimscope.core.inspection import report_to_dict

    report = args.worker.open(args.model, trust=args.trust, input_shapes=_shapes(args))
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


def _presets_help() -> str:
    from slimscope.core.recipe_presets import DEFAULT_PRESET, PRESETS

    names = "; ".join(f"{name}: {preset.summary}" for name, preset in PRESETS.items())
    return f"start from this preset instead of the default ({DEFAULT_PRESET}). {names}".replace("%", "%%")


def _recipe(args: argparse.Namespace) -> int:
    from slimscope.core.recipe_files import dumps_recipe, save_recipe
    from slimscope.core.recipe_presets import DEFAULT_PRESET, preset_recipe

    preset = args.preset or DEFAULT_PRESET
    preset_recipe(preset)  # an unknown name is refused before the model is read
    report = args.worker.open(args.model, trust=args.trust, input_shapes=_shapes(args))
    recipe = preset_recipe(preset, [layer.name for layer in report.layers])
    if args.output:
        from slimscope.core.user_files import CommandFiles

        CommandFiles().reads_model(report.loaded).destination(args.output, "the recipe")
        save_recipe(recipe, args.output)
    else:
        sys.stdout.write(dumps_recipe(recipe) + "\n")
    return 0


def _show_demo(worker: CommandWorker) -> int:
    """The window on the demo model; the demo table on stdout when piped, headless or without Qt."""
    from slimscope.resources import DEMO_MODEL

    if sys.stdout.isatty() and _has_display():
        code = _open_window(None, trust=False)
        if code is not None:
            return code
        print("slimscope: the desktop window needs PySide6, pyqtgraph and superqt; showing the demo "
              "model as text.", file=sys.stderr)  # fmt: skip
    print(f"Slimscope {_version()} — showing the demo model (`slimscope gui` opens the window).\n")
    return _inspect(
        argparse.Namespace(model=DEMO_MODEL, input_shape=None, trust=False, json=False, worker=worker)
    )


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

    return run_optimize(args, _run, args.worker)


def _evaluate(args: argparse.Namespace) -> int:
    from slimscope.core.cli_optimize import run_evaluate

    return run_evaluate(args, _run, args.worker)


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
