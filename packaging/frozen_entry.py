"""Entry point of the PyInstaller bundle (`dist/slimscope/slimscope`): the `slimscope` command, frozen.

A frozen application has no Python interpreter to start children with: `sys.executable` is this program.
Slimscope starts three kinds of child processes, and each one arrives back here:

- `multiprocessing` spawn children (the worker process of the window, the evaluation and sensitivity pools,
  retraining) and multiprocessing's resource tracker: `multiprocessing.freeze_support()` recognises their
  arguments, runs them and exits (PyInstaller's runtime hook makes it work on Linux too);
- `core.tasks.run_in_child` runs `sys.executable -m slimscope.core.loading.torch_convert ...` for PyTorch
  conversion: this script accepts the same `-m MODULE ARGS` form, for Slimscope's own modules only;
- `--smoke-test [MODEL]`: opens the window offscreen on MODEL (the demo by default), waits for the model
  and the first comparison numbers, and exits 0, or 1 with the error on stderr (`packaging/smoke_test.sh`).

Everything else is the ordinary command line (`slimscope.core.cli.main`).
"""

from __future__ import annotations

import multiprocessing
import runpy
import sys

# Interpreter options a parent may put before `-m` (as `python -u -m x` would); they are accepted and
# ignored: the frozen interpreter's settings are fixed when it is built. The second set takes a value.
_FLAGS = {"-u", "-B", "-E", "-I", "-s", "-S", "-O", "-OO", "-q", "-b", "-bb"}
_FLAGS_WITH_VALUE = {"-X", "-W"}
_OWN_MODULES = "slimscope."


def main() -> int:
    multiprocessing.freeze_support()  # a spawn child or the resource tracker runs here and exits
    argv = sys.argv[1:]
    module, module_args = _module_to_run(argv)
    if module is not None:
        return _run_module(module, module_args)
    if argv[:1] == ["--smoke-test"]:
        from slimscope.gui.smoke_test import main as smoke_test_main

        return smoke_test_main(argv[1:])
    from slimscope.core.cli import main as cli_main

    return cli_main(argv)


def _module_to_run(argv: list[str]) -> tuple[str | None, list[str]]:
    """The module of a `[FLAGS] -m MODULE ARGS` command line, and its arguments; (None, []) otherwise."""
    index = 0
    while index < len(argv) and (argv[index] in _FLAGS or argv[index] in _FLAGS_WITH_VALUE):
        index += 2 if argv[index] in _FLAGS_WITH_VALUE else 1
    if index + 1 < len(argv) and argv[index] == "-m":
        return argv[index + 1], argv[index + 2 :]
    return None, []


def _run_module(module: str, args: list[str]) -> int:
    """Run one of Slimscope's modules as `__main__`, as `python -m` would (sys.argv[0] becomes its path)."""
    if not module.startswith(_OWN_MODULES):
        print(
            f"slimscope: error: only Slimscope's own modules run with -m here, not '{module}'",
            file=sys.stderr,
        )
        return 2
    sys.argv = [sys.executable, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as stop:  # the module's own exit code, as the interpreter would report it
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
