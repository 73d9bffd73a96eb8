"""Render the app icon's SVG source to a PNG: `python packaging/render_icon.py [SIZE]` (default 256 px).

resources/icons/slimscope.svg is the source; resources/icons/slimscope.png is committed beside it for
desktops and tools that do not read SVG. Qt's own SVG renderer is used (PySide6 is a dependency already),
offscreen, so no display and no extra package are needed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ICONS = Path(__file__).resolve().parents[1] / "resources" / "icons"


def render(svg: Path, png: Path, size: int) -> None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    _app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"{svg} is not an SVG file Qt can read")
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    if not image.save(str(png)):
        raise SystemExit(f"could not write {png}")


if __name__ == "__main__":
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    render(ICONS / "slimscope.svg", ICONS / "slimscope.png", size)
    print(f"wrote {ICONS / 'slimscope.png'} ({size} px)")
