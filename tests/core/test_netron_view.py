"""`NetronView`: serves the model on loopback from a private temporary folder, and stop() undoes it all."""

from __future__ import annotations

import os
import stat
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import onnx
import pytest

from slimscope.core.netron_view import NetronView
from slimscope.resources import DEMO_DATA, DEMO_MODEL


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, b""


@pytest.fixture
def view():
    view = NetronView()
    yield view
    view.stop()


def test_serves_the_page_and_the_model_from_a_private_folder(view):
    url = view.show(DEMO_MODEL, DEMO_MODEL.name)
    assert url.startswith("http://127.0.0.1:")
    status, page = _get(url + "/")
    assert status == 200 and b"<html" in page.lower() and b'content="/data/' in page
    status, data = _get(f"{url}/data/{DEMO_MODEL.name}")
    assert status == 200 and data == DEMO_MODEL.read_bytes()

    folder = view.folder
    assert folder is not None and folder.is_dir()
    assert folder.resolve() != DEMO_MODEL.parent.resolve()
    assert folder.resolve().parent == Path(tempfile.gettempdir()).resolve()
    assert sorted(p.name for p in folder.iterdir()) == [DEMO_MODEL.name]
    if os.name == "posix":
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    # Nothing beside the model's own file is reachable (the demo's data sits next to it).
    assert _get(f"{url}/data/{DEMO_DATA.name}")[0] == 404


def test_stop_closes_the_port_and_deletes_the_folder(view):
    url = view.show(onnx.load(DEMO_MODEL), "demo")
    folder = view.folder
    assert folder is not None and (folder / "demo.onnx").is_file()
    view.stop()
    assert not folder.exists()
    assert view.url is None
    with pytest.raises(urllib.error.URLError) as info:
        _get(url + "/")
    assert isinstance(info.value.reason, ConnectionRefusedError)


def test_a_new_show_stops_the_previous_one(view):
    first = view.show(DEMO_MODEL, "first.onnx")
    first_folder = view.folder
    second = view.show(DEMO_MODEL, "second.onnx")
    assert first != second and first_folder is not None and not first_folder.exists()
    assert _get(second + "/")[0] == 200
    with pytest.raises(urllib.error.URLError):
        _get(first + "/")


def test_a_name_cannot_leave_the_private_folder(view):
    view.show(DEMO_MODEL, "../../evil name/<x>.onnx")
    assert view.folder is not None
    assert [p.name for p in view.folder.iterdir()] == ["x_.onnx"]
