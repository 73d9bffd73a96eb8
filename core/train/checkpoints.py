"""Retraining checkpoints: written atomically into the folder the user chose, read back safely.

A checkpoint holds only tensors, numbers, strings and containers of them, so it loads with
`torch.load(..., weights_only=True)`: a planted file cannot run code. Its name carries a key made from
the model, the recipe and the data, so a folder can hold the checkpoints of several runs and a run never
resumes from another's. It never replaces a file that is not a Slimscope checkpoint (the source model
included, whatever its name).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from slimscope.core.errors import TrainingError

FORMAT = "slimscope-finetune/1"


def run_key(*parts: str) -> str:
    """A short hex key for one retraining run (model, recipe, data fingerprints)."""
    digest = hashlib.blake2b(digest_size=8)
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def checkpoint_path(folder: Path, key: str) -> Path:
    return folder / f"slimscope-finetune-{key}.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` through a temporary file in the same folder, then rename over it
    (call `check_target` once first). Ctrl-C waits for the rename (core/user_files.py)."""
    from slimscope.core.user_files import deferred_interrupts

    path.parent.mkdir(parents=True, exist_ok=True)
    with deferred_interrupts():
        _save_checkpoint(path, state)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch

    temp_name = None
    try:
        # A short fixed prefix: a name built from the checkpoint's own could pass the 255-byte limit.
        with tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=".slimscope-", suffix=".part", delete=False
        ) as temp:
            temp_name = temp.name
            torch.save({"format": FORMAT, **state}, temp)
            temp.flush()
            os.fsync(temp.fileno())
        os.replace(temp_name, path)
    except OSError as exc:
        if temp_name is not None and os.path.exists(temp_name):
            os.unlink(temp_name)
        raise TrainingError(f"Cannot write the checkpoint '{path}': {exc.strerror}.") from None


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at `path`, None when there is none; weights only, never arbitrary objects."""
    import pickle

    import torch

    if not path.is_file():
        return None
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise TrainingError(
            f"'{path.name}' is not a checkpoint Slimscope can resume from ({first})."
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise TrainingError(f"'{path.name}' is not a Slimscope retraining checkpoint.")
    return state


def check_target(path: Path, protected: list[Path]) -> None:
    """Raise TrainingError unless `path` is free or holds a Slimscope checkpoint, and is not protected."""
    target = path.resolve()
    if any(target == p.resolve() for p in protected):
        raise TrainingError(f"The checkpoint would overwrite '{path.name}', the model being retrained.")
    if path.exists():
        try:
            load_checkpoint(path)
        except TrainingError:
            raise TrainingError(
                f"'{path}' exists and is not a Slimscope checkpoint; choose another checkpoint folder."
            ) from None
