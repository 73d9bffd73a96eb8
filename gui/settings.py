"""Every persistent setting, read and written here with its default (QSettings: Slimscope/Slimscope)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings

MAX_RECENT_FILES = 10
_RECENT_FILES = "recent_files"
_LAST_FOLDER = "last_folder"


def recent_files() -> list[Path]:
    """Recently opened model files, newest first."""
    value = QSettings().value(_RECENT_FILES, [])
    if isinstance(value, str):  # INI storage returns a one-element list as a plain string
        value = [value]
    return [Path(item) for item in value or []]


def add_recent_file(path: Path) -> None:
    path = Path(path).resolve()
    kept = [p for p in recent_files() if p != path]
    QSettings().setValue(_RECENT_FILES, [str(p) for p in [path, *kept][:MAX_RECENT_FILES]])


def clear_recent_files() -> None:
    QSettings().remove(_RECENT_FILES)


def last_folder() -> str:
    return str(QSettings().value(_LAST_FOLDER, str(Path.home())))


def set_last_folder(folder: Path) -> None:
    QSettings().setValue(_LAST_FOLDER, str(folder))
