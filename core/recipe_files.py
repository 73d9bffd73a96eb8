"""Recipe files: reading (only regular files of sane size, nesting bounded) and writing (atomic, only
regular files, Ctrl-C held back from the rename), and the JSON text both use. Validation is
`recipe.parse_recipe`'s alone."""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from slimscope.core.errors import RecipeError
from slimscope.core.recipe import Recipe, parse_recipe


def loads_recipe(text: str, source: str = "Recipe text") -> Recipe:
    """Parse recipe JSON text; `source` names it in the message if the JSON is invalid."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecipeError(
            f"{source} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}."
        ) from None
    except RecursionError:  # deeper than Python's parser goes
        too_deep = True
    else:
        too_deep = _nesting_depth(data) > MAX_RECIPE_DEPTH
    if too_deep:
        raise RecipeError(f"{source} is nested more than {MAX_RECIPE_DEPTH} levels deep; a recipe is not.")
    return parse_recipe(data)


MAX_RECIPE_DEPTH = 32  # a recipe nests 5 levels; validation recurses per level
MAX_RECIPE_BYTES = 16 * 1024 * 1024  # a recipe for a 1,000-layer model is ~200 kB


def _nesting_depth(data: Any) -> int:
    """How deep JSON data nests (iteratively: the depth may be what is wrong with it)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_RECIPE_DEPTH:
            break
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _read_recipe_text(path: str | os.PathLike[str]) -> str:
    """A recipe file's text. Only a regular file of sane size is read: a pipe would block the read
    forever and a device (/dev/zero) never ends. Opened without blocking, then checked, then read."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with open(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise RecipeError(f"Recipe file '{path}' is not a regular file (a pipe, device or socket).")
        data = file.read(MAX_RECIPE_BYTES + 1)
    if len(data) > MAX_RECIPE_BYTES:
        raise RecipeError(
            f"Recipe file '{path}' is larger than {MAX_RECIPE_BYTES // 2**20} MiB; a recipe is a few kB."
        )
    return data.decode("utf-8-sig")  # tolerates a BOM (Notepad)


def load_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Read and validate a recipe file."""
    try:
        text = _read_recipe_text(path)
    except (OSError, UnicodeDecodeError) as exc:
        reason = (exc.strerror or exc) if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise RecipeError(f"Cannot read recipe file '{path}': {reason}.") from None
    return loads_recipe(text, f"Recipe file '{path}'")


def dumps_recipe(recipe: Recipe) -> str:
    """The recipe as indented JSON text (what `slimscope recipe MODEL` prints)."""
    return json.dumps(recipe.to_dict(), indent=2, allow_nan=False) + "\n"


def save_recipe(recipe: Recipe, path: str | os.PathLike[str]) -> None:
    """Write the recipe atomically: a temporary file in the same folder, then os.replace. Only a regular
    file is written (a link's target; see core/user_files.py), and Ctrl-C waits for the rename."""
    from slimscope.core.user_files import deferred_interrupts, regular_destination

    target = regular_destination(Path(path))
    text = dumps_recipe(recipe)
    with deferred_interrupts():
        _write_recipe_text(target, text, path)


def _write_recipe_text(target: Path, text: str, path: str | os.PathLike[str]) -> None:
    temp_name: str | None = None
    try:
        mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=target.parent, prefix=".slimscope-", suffix=".part", delete=False
        ) as temp:
            temp_name = temp.name
            temp.write(text)
            temp.flush()
            os.fsync(temp.fileno())
        os.chmod(temp_name, mode)  # mkstemp creates 0600; give a normal file's permissions
        os.replace(temp_name, target)
    except OSError as exc:
        if temp_name is not None and os.path.exists(temp_name):
            os.unlink(temp_name)
        raise RecipeError(f"Cannot write recipe file '{path}': {exc.strerror}.") from None
