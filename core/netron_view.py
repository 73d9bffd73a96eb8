"""`NetronView`: show a model's graph in Netron's web page, served on loopback from a private folder.

Netron's server answers `/data/<path>` with any file under the served model's folder, so the model is always
written (or copied) into a private temporary folder first — the user's folder is never served. At most one
model is served at a time: a new `show` stops the previous server and deletes its folder.

Netron puts the file's name unescaped into its page (an HTML attribute) and its page fetches that name as a
URL without encoding it, so the served copy's name keeps letters of any script, digits and spaces but not
the characters that would end the attribute or the URL's path (`"<>&'`, `#`, `%`, `?`, slashes).
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import time
import urllib.parse
from pathlib import Path

import netron
import onnx

from slimscope.core.export import fits_one_file, save_with_external_data

LOOPBACK = "127.0.0.1"
STOP_TIMEOUT = 2.0  # seconds; Netron's server thread polls its socket every 0.25 s


class NetronView:
    def __init__(self) -> None:
        self.address: tuple[str, int] | None = None
        self.folder: Path | None = None
        self.file_name: str | None = None

    @property
    def url(self) -> str | None:
        """The page that shows the graph."""
        return None if self.address is None else f"http://{self.address[0]}:{self.address[1]}"

    @property
    def model_url(self) -> str | None:
        """Where the page fetches the model file from (the name percent-encoded)."""
        if self.url is None or self.file_name is None:
            return None
        return f"{self.url}/data/{urllib.parse.quote(self.file_name)}"

    def show(self, model: onnx.ModelProto | Path, name: str) -> str:
        """Serve `model` (in memory, or an ONNX file to copy) under `name`; returns the page's URL."""
        self.stop()
        folder = Path(tempfile.mkdtemp(prefix="slimscope-netron-"))
        try:
            path = folder / _file_name(name)
            if isinstance(model, onnx.ModelProto):
                _save(model, path)
            else:
                shutil.copyfile(model, path)  # only the .onnx file: external data files stay behind
            with _root_logging_kept():
                self.address = netron.start(str(path), address=(LOOPBACK, 0), browse=False)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self.folder, self.file_name = folder, path.name
        url = self.url
        assert url is not None
        return url

    def stop(self) -> None:
        """Stop the server (its port is closed at once) and delete the private folder. Safe to repeat."""
        address, folder = self.address, self.folder
        self.address = self.folder = self.file_name = None
        if address is not None:
            netron.stop(address)
            # netron.stop closes the listening socket, but while the server thread still waits in its poll
            # (up to 0.25 s) the kernel keeps the port open: connections are accepted, then reset. Wait for
            # the thread to end so that the port is really closed when stop() returns.
            deadline = time.monotonic() + STOP_TIMEOUT
            while netron.status(address) and time.monotonic() < deadline:
                time.sleep(0.01)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _save(model: onnx.ModelProto, path: Path) -> None:
    """The model as one file, or with its weights beside it when it is over protobuf's 2 GiB."""
    if fits_one_file(model):
        onnx.save_model(model, path)
        return
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # saving with external data empties the tensors of the model it is given
    save_with_external_data(copy, path)


# Kept: letters and digits of any script, spaces, and . _ - ( ) + , ; = [ ] ! @ ~ ; the rest becomes "_".
_UNSAFE_IN_NAME = re.compile(r"[^\w .()+,;=\[\]!@~-]+")


def _file_name(name: str) -> str:
    """A plain file name ending in .onnx: no folders, nothing Netron's page or URL would misread."""
    stem = _UNSAFE_IN_NAME.sub("_", Path(name).name).strip(" ._") or "model"
    return stem if stem.lower().endswith(".onnx") else f"{stem}.onnx"


class _root_logging_kept:
    """`netron.serve` calls `logging.basicConfig(level=INFO)` when the root logger has no handler; undo that
    so that showing a graph does not turn on every library's INFO messages in the app."""

    def __enter__(self) -> None:
        root = logging.getLogger()
        self._handlers, self._level = list(root.handlers), root.level

    def __exit__(self, *_exc: object) -> None:
        root = logging.getLogger()
        for handler in root.handlers[:]:
            if handler not in self._handlers:
                root.removeHandler(handler)
        root.setLevel(self._level)
