"""Slimscope: see inside a vision model and make it smaller and faster.

The package is assembled from the repository's top-level folders: `core/` becomes
`slimscope.core`, `gui/` becomes `slimscope.gui`, `resources/` becomes `slimscope.resources`.
"""

__version__ = "0.1.0"
