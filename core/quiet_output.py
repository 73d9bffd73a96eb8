"""Keep libraries' own output off the user's terminal: a command prints its result and one-line errors only.

Measured on `slimscope optimize` before this existed: numpy's RuntimeWarnings from inside onnxruntime's
calibrator (two lines each, with source paths), `WARNING:root:...` lines from onnxruntime's quantizer
(it logs through the root logger, which Python then prints on stderr), and onnxruntime's C++ log lines
with colour codes (`\\x1b[1;31m2026-... [E:onnxruntime:, sequential_executor.cc:677 ...]`) for an error
it also raises, and which Slimscope turns into a sentence.

Called in each process that runs those libraries for a command: the command's own, its worker process,
and executor workers. `--debug` leaves everything on.
"""

from __future__ import annotations

import logging
import warnings

# onnxruntime's severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal. Its errors also come back as
# exceptions, which Slimscope words; the log line would say the same thing a second time, in colour.
_RUNTIME_SEVERITY = 4


def quiet_library_output(*, runtime: bool = True) -> None:
    """Silence Python warnings, the root logger and (with `runtime`) onnxruntime's log in this process."""
    warnings.simplefilter("ignore")  # worker processes call this themselves: nothing goes through the env
    root = logging.getLogger()
    if not any(isinstance(handler, logging.NullHandler) for handler in root.handlers):
        # A root logger with a handler is never given Python's default one (logging.warning() would
        # call basicConfig) nor the last-resort handler that prints 'WARNING:root:...' on stderr.
        root.addHandler(logging.NullHandler())
    if runtime:
        quiet_onnxruntime()


def quiet_onnxruntime() -> None:
    """onnxruntime's default logger at 'fatal': sessions that do not set their own level log nothing."""
    import onnxruntime

    onnxruntime.set_default_logger_severity(_RUNTIME_SEVERITY)
