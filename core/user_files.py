"""The user's files, in one place: what a command reads is never what it writes, only regular files are
written, a Ctrl-C never leaves half a file, and libraries that save where they stand do it in a folder of
our own.

- `CommandFiles` holds what one command reads (model and its data files, recipe, calibration, evaluation,
  training and validation data, checkpoints) and checks each destination against all of it, however the
  path is spelled (`./x`, `sub/../x`, a symbolic or hard link), and against the destinations before it.
- `regular_destination` refuses devices, pipes, sockets and folders (writing one through a rename would
  replace `/dev/null` or a terminal with a regular file); a symbolic link to a regular file is followed:
  its target is replaced atomically and the link is kept.
- `deferred_interrupts` holds Ctrl-C back while a file is renamed into place: Python drops a
  KeyboardInterrupt that lands in a finalizer (a temporary file's `__del__`), and the command went on.
- `private_working_directory` / `enter_private_working_directory`: onnxruntime's symbolic shape inference
  saves `sym_shape_infer_temp.onnx` and the model's weights as `<uuid>.data` into the *current* folder when
  it cannot finish, following symbolic links there. Every process that may call such a library (the
  command, the window, the worker processes, executor workers) sits in a private folder, so those files
  land where nobody else's are.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from types import FrameType

from slimscope.core.errors import ExportError

_MODEL_DATA_SUFFIX = ".data"  # export.external_data_path: a model over 2 GiB gets `<name>.onnx.data`
CHECKPOINT_PREFIX = "slimscope-finetune-"  # checkpoints.checkpoint_path


# ---------------------------------------------------------------------- what a command reads


@dataclass(frozen=True)
class FileRead:
    path: Path
    what: str  # "the recipe", "the calibration data", ...: said in the refusal
    written: bool = False  # another destination of the same command


class CommandFiles:
    """The files one command reads and the destinations it has checked so far."""

    def __init__(self) -> None:
        self.read: list[FileRead] = []
        self.written: list[FileRead] = []
        self.checkpoint_folders: list[Path] = []

    def reads(self, path: str | os.PathLike | None, what: str) -> CommandFiles:
        """Protect `path` (a file, or a folder and everything in it); None is ignored."""
        if path is not None:
            self.read.append(FileRead(Path(path), what))
        return self

    def reads_model(self, loaded, what: str = "the model") -> CommandFiles:
        """A loaded model's source and the external data files it was read from."""
        self.reads(loaded.source, what)
        for data in loaded.external_files:
            self.reads(data, f"a data file of {what}")
        return self

    def reads_checkpoints(self, folder: str | os.PathLike | None) -> CommandFiles:
        """The checkpoint folder: its checkpoints (`slimscope-finetune-*`) are read on resume."""
        if folder is not None:
            self.checkpoint_folders.append(Path(folder))
        return self

    def destination(self, path: str | os.PathLike, what: str = "the output", *, model: bool = False) -> Path:
        """Check a destination before any work; the path to write (a link's target). It is then protected
        from later destinations. `model`: its weights file `<name>.data` (over 2 GiB) is checked too."""
        target = regular_destination(Path(path))
        refuse_overlap(Path(path), self.read + self.written, self.checkpoint_folders)
        if model:
            refuse_overlap(_model_data(Path(path)), self.read + self.written, self.checkpoint_folders,
                           weights_of=Path(path))  # fmt: skip
        if not Path(path).parent.is_dir():
            raise ExportError(f"The folder '{Path(path).parent}' does not exist.")
        self.written.append(FileRead(Path(path), what, written=True))
        if model:
            self.written.append(
                FileRead(_model_data(Path(path)), f"the weights file of {what}", written=True)
            )
        return target


def refuse_overlap(
    path: Path,
    read: Iterable[FileRead],
    checkpoint_folders: Iterable[Path] = (),
    *,
    weights_of: Path | None = None,
) -> None:
    """Raise ExportError when writing `path` would change a file in `read` (or a file inside a folder in
    `read`, or a checkpoint). `weights_of`: `path` is the weights file the model `weights_of` would get."""
    for item in read:
        if _same_file(path, item.path):
            if weights_of is not None:
                raise ExportError(
                    f"'{weights_of}' would overwrite '{item.path}' with its weights file '{path.name}', and "
                    f"this command {'writes' if item.written else 'reads'} that file ({item.what}); choose "
                    "another file name."
                )
            does = "writes too" if item.written else "reads"
            raise ExportError(
                f"'{path}' would overwrite '{item.path}', which this command {does} ({item.what}); "
                "choose another file name."
            )
        if os.path.isdir(item.path) and _inside(path, item.path):
            raise ExportError(
                f"'{weights_of or path}' would write into the folder '{item.path}', which this command reads "
                f"({item.what}); choose a file outside it."
            )
    for folder in checkpoint_folders:
        if path.name.startswith(CHECKPOINT_PREFIX) and _inside(path, folder):
            raise ExportError(
                f"'{weights_of or path}' would overwrite a checkpoint of this run in '{folder}'; choose "
                "another file name."
            )


def _model_data(path: Path) -> Path:
    return path.with_name(path.name + _MODEL_DATA_SUFFIX)


def _same_file(path: Path, other: Path) -> bool:
    """Whether `path` names `other`: the same real path (`./x`, `sub/../x`, symbolic links), or the same
    file (hard links, case-insensitive file systems)."""
    if os.path.realpath(path) == os.path.realpath(other):
        return True
    try:
        return os.path.samefile(path, other)
    except OSError:  # one of them does not exist (yet)
        return False


def _inside(path: Path, folder: Path) -> bool:
    real, real_folder = os.path.realpath(path), os.path.realpath(folder)
    return real != real_folder and os.path.commonpath([real, real_folder]) == real_folder


# ---------------------------------------------------------------------- only regular files

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
    (stat.S_ISFIFO, "a pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
)


def regular_destination(path: Path) -> Path:
    """The file to replace when writing `path`: `path` itself when it is missing or a regular file, the
    target of a symbolic link to a regular file (the link stays); anything else is refused."""
    try:
        own = os.lstat(path)
    except FileNotFoundError:
        return path
    except OSError:  # not reachable (a file used as a folder, permissions): the write says why
        return path
    if stat.S_ISREG(own.st_mode):
        return path
    if not stat.S_ISLNK(own.st_mode):
        raise ExportError(_not_regular(path, _kind(own.st_mode)))
    opened = _process_file_link(path)
    if opened is not None:  # /dev/stdout, /proc/self/fd/1: replacing the file behind it writes nowhere
        raise ExportError(_not_regular(path, f"a symbolic link to a process's open file ('{opened}')"))
    try:
        followed = os.stat(path)
    except OSError:
        raise ExportError(
            f"Cannot write '{path}': it is a symbolic link to '{os.readlink(path)}', which does not exist, "
            "and Slimscope writes only regular files; choose a file name."
        ) from None
    if not stat.S_ISREG(followed.st_mode):
        raise ExportError(_not_regular(path, f"a symbolic link to {_kind(followed.st_mode)}"))
    return Path(os.path.realpath(path))


def _process_file_link(path: Path) -> Path | None:
    """The first hop of the link chain from `path` that lies under /proc (a process's file descriptor,
    which /dev/stdout and /dev/fd/N lead to), or None. Such a link names the terminal or the pipe the
    process holds, and when that is a regular file (a shell redirect) its real path is only a name."""
    hop = Path(path)
    for _ in range(40):  # the kernel's own limit on links in a path
        folder = Path(os.path.realpath(hop.parent))
        if folder == _PROC or _PROC in folder.parents:
            return hop
        if not os.path.islink(hop):
            return None
        hop = folder / os.readlink(hop)  # an absolute target replaces the folder
    return None


_PROC = Path("/proc")


def _kind(mode: int) -> str:
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def _not_regular(path: Path, kind: str) -> str:
    return (
        f"Cannot write '{path}': it is {kind}, and Slimscope writes only regular files; choose a file name."
    )


# ---------------------------------------------------------------------- Ctrl-C while renaming


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) back until the block ends, then act on it as the previous handler would: a
    file is replaced whole or not at all, and the interrupt is never lost in a finalizer."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives signals
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, _frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous):
                previous(signal.SIGINT, None)  # Python's default handler raises KeyboardInterrupt
            elif previous == signal.SIG_DFL:
                signal.raise_signal(signal.SIGINT)


@contextlib.contextmanager
def noticed_interrupts() -> Iterator[list[int]]:
    """Within the block Ctrl-C raises KeyboardInterrupt as usual and is also noted in the list yielded, so
    that one a library swallowed still ends the command. Python's own handler is restored afterwards."""
    noticed: list[int] = []
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler  # ignored, or someone else's
    ):
        yield noticed
        return

    def interrupt(number: int, frame: FrameType | None) -> None:
        noticed.append(number)
        signal.default_int_handler(number, frame)

    signal.signal(signal.SIGINT, interrupt)
    try:
        yield noticed
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# ---------------------------------------------------------------------- a private working folder

_private_folder: str | None = None  # this process's own working folder, once it has one


def absolute_arguments(args: argparse.Namespace) -> None:
    """Make every path among parsed arguments absolute (`~` expanded, links and `..` kept as spelled), so
    that they still name the user's files after the process leaves the user's working folder."""
    for name, value in vars(args).items():
        if isinstance(value, PurePath):
            setattr(args, name, absolute(value))


def refuse_special_outputs(args: argparse.Namespace, names: Iterable[str] = ("output", "report")) -> None:
    """Before any work (reading a large model takes a while): outputs that are not regular files."""
    for name in names:
        value = getattr(args, name, None)
        if isinstance(value, PurePath):
            regular_destination(Path(value))


def absolute(path: str | os.PathLike) -> Path:
    return Path(os.path.expanduser(path)).absolute()


@contextlib.contextmanager
def private_working_directory() -> Iterator[Path]:
    """Run the block in a new private folder (removed afterwards, with whatever libraries left there);
    the previous working folder is restored."""
    global _private_folder
    try:
        previous: str | None = os.getcwd()
    except OSError:  # the user's folder was deleted under us: nothing to return to
        previous = None
    folder, outer = tempfile.mkdtemp(prefix="slimscope-cwd-"), _private_folder
    try:
        os.chdir(folder)
        _private_folder = folder
        yield Path(folder)
    finally:
        _private_folder = outer
        if previous is not None:
            with contextlib.suppress(OSError):
                os.chdir(previous)
        shutil.rmtree(folder, ignore_errors=True)


def enter_private_working_directory(folder: str | None = None) -> Path:
    """For a whole process (workers): move into `folder`, or a new private folder removed at exit."""
    global _private_folder
    if folder is None:
        folder = tempfile.mkdtemp(prefix="slimscope-cwd-")
        atexit.register(shutil.rmtree, folder, True)
    os.chdir(folder)
    _private_folder = folder
    return Path(folder)


def clear_private_working_directory() -> None:
    """Remove what libraries left in this process's private folder (between jobs: onnxruntime's
    `<uuid>.data` holds a copy of the model's weights each time symbolic shape inference gives up)."""
    folder = _private_folder
    if folder is None or not os.path.samefile(os.getcwd(), folder):
        return
    for entry in os.scandir(folder):
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
