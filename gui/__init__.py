"""The Qt application (PySide6 + pyqtgraph) over `slimscope.core`. Widgets, actions, threads, settings."""
