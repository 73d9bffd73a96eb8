"""Undoable edits: each command swaps the Session's recipe (glue's `core/command.py` pattern)."""

from __future__ import annotations

from PySide6.QtGui import QUndoCommand

from slimscope.core.recipe import Recipe
from slimscope.core.session import Session

_RECIPE_EDIT = 1001


class RecipeEdit(QUndoCommand):
    """Replace the recipe. Consecutive edits with the same non-empty `merge_key` (one slider drag, the
    same targets) merge into one undo step."""

    def __init__(self, session: Session, after: Recipe, text: str, merge_key: str = "") -> None:
        super().__init__(text)
        self.session = session
        self.before = session.recipe
        self.after = after
        self.merge_key = merge_key

    def id(self) -> int:
        return _RECIPE_EDIT if self.merge_key else -1

    def mergeWith(self, other: QUndoCommand) -> bool:
        if not isinstance(other, RecipeEdit) or other.merge_key != self.merge_key:
            return False
        self.after = other.after
        return True

    def redo(self) -> None:
        self.session.set_recipe(self.after)

    def undo(self) -> None:
        if self.before is not None:
            self.session.set_recipe(self.before)
