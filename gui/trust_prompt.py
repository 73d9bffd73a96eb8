"""Files that can run code when opened (TorchScript, .pt2) open only after the user says they trust them."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QMessageBox, QWidget

from slimscope.core.loading.sniff import FileKind, sniff_file

_CODE_KINDS = {FileKind.TORCHSCRIPT, FileKind.TORCH_EXPORT}


def can_run_code(path: Path) -> bool:
    """True for TorchScript and torch.export files; unreadable files are left for the loader to report."""
    try:
        return sniff_file(path) in _CODE_KINDS
    except OSError:
        return False


def ask_to_trust(parent: QWidget | None, path: Path) -> bool:
    answer = QMessageBox.question(
        parent,
        "Open a file that can run code?",
        f"'{path.name}' can run code when opened — do you trust it?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes
