"""Every persistent setting, read and written here with its default (QSettings: Slimscope/Slimscope)."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings
from PySide6.QtWidgets import QSplitter, QWidget

MAX_RECENT_FILES = 10
_RECENT_FILES = "recent_files"
_LAST_FOLDER = "last_folder"
_LAST_DATA_FOLDER = "last_data_folder"
_WINDOW_GEOMETRY = "window/geometry"
_SPLITTERS = "window/splitters"
_THEME = "appearance/theme"
THEMES = ("system", "light", "dark")


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


def last_data_folder() -> str:
    """Where the data dialog's file choosers start: data often lives apart from the models."""
    return str(QSettings().value(_LAST_DATA_FOLDER, last_folder()))


def set_last_data_folder(folder: Path) -> None:
    QSettings().setValue(_LAST_DATA_FOLDER, str(folder))


def theme() -> str:
    """The chosen appearance: "system" (follow the system's light or dark scheme), "light" or "dark"."""
    value = QSettings().value(_THEME, "system")
    return value if value in THEMES else "system"


def set_theme(choice: str) -> None:
    if choice not in THEMES:
        raise ValueError(f"Unknown theme {choice!r}; choose one of {', '.join(THEMES)}.")
    QSettings().setValue(_THEME, choice)


def save_layout(window: QWidget, splitters: dict[str, QSplitter]) -> None:
    """Window geometry and every splitter's state, for the next start."""
    store = QSettings()
    store.setValue(_WINDOW_GEOMETRY, window.saveGeometry())
    for name, splitter in splitters.items():
        store.setValue(f"{_SPLITTERS}/{name}", splitter.saveState())


def restore_layout(window: QWidget, splitters: dict[str, QSplitter]) -> bool:
    """Put back what `save_layout` stored; False (and the built-in layout) when nothing was stored."""
    store = QSettings()
    geometry = store.value(_WINDOW_GEOMETRY)
    if isinstance(geometry, QByteArray) and not geometry.isEmpty():
        window.restoreGeometry(geometry)
    restored = False
    for name, splitter in splitters.items():
        state = store.value(f"{_SPLITTERS}/{name}")
        if isinstance(state, QByteArray) and not state.isEmpty():
            restored = splitter.restoreState(state) or restored
    return restored


_RAY_ADDRESS = "analysis/ray_address"


def ray_address() -> str:
    """Where sensitivity sweeps run: "" for this computer, else a Ray address ("auto" or HOST:PORT)."""
    return str(QSettings().value(_RAY_ADDRESS, ""))


def set_ray_address(address: str) -> None:
    QSettings().setValue(_RAY_ADDRESS, address.strip())


_TRAINING_DATA = "retrain/training_data"
_VALIDATION_DATA = "retrain/validation_data"
_CHECKPOINT_FOLDER = "retrain/checkpoint_folder"


def _optional_path(key: str) -> Path | None:
    value = str(QSettings().value(key, "") or "")
    return Path(value) if value else None


def _set_optional_path(key: str, path: Path | None) -> None:
    QSettings().setValue(key, "" if path is None else str(path))


def last_training_data() -> Path | None:
    """The training data of the last retraining started (Recipe → Retrain…), None before any."""
    return _optional_path(_TRAINING_DATA)


def set_last_training_data(path: Path | None) -> None:
    _set_optional_path(_TRAINING_DATA, path)


def last_validation_data() -> Path | None:
    """The validation data of the last retraining started; None: split off the training data."""
    return _optional_path(_VALIDATION_DATA)


def set_last_validation_data(path: Path | None) -> None:
    _set_optional_path(_VALIDATION_DATA, path)


def checkpoint_folder() -> Path | None:
    """Where retraining writes its checkpoints; None: it writes none."""
    return _optional_path(_CHECKPOINT_FOLDER)


def set_checkpoint_folder(path: Path | None) -> None:
    _set_optional_path(_CHECKPOINT_FOLDER, path)


_INPUT_SIZES = "models/input_sizes"  # JSON: model path → "1x3x48x192" (inputs joined by ",")
MAX_INPUT_SIZES = 50


def _input_sizes() -> dict[str, str]:
    try:
        value = json.loads(str(QSettings().value(_INPUT_SIZES, "{}") or "{}"))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def input_size(model: Path) -> list[tuple[int, ...]] | None:
    """The input size the user gave for a model that leaves it open (one shape per input), or None."""
    text = _input_sizes().get(str(Path(model).resolve()))
    try:
        return [tuple(int(d) for d in part.split("x")) for part in text.split(",")] if text else None
    except ValueError:
        return None


def set_input_size(model: Path, shapes: list[tuple[int, ...]] | None) -> None:
    """Remember (or with None forget) the input size given for `model`; the newest MAX_INPUT_SIZES stay."""
    sizes = _input_sizes()
    key = str(Path(model).resolve())
    sizes.pop(key, None)
    if shapes:
        sizes[key] = ",".join("x".join(str(d) for d in shape) for shape in shapes)
    kept = dict(list(sizes.items())[-MAX_INPUT_SIZES:])
    QSettings().setValue(_INPUT_SIZES, json.dumps(kept))
