"""View → Open Graph in Netron: the URL goes to the browser (recorded here), the server stops when the model
changes and when the window closes (the app's quit path)."""

import urllib.error
import urllib.request

import onnx
import pytest
from PySide6.QtGui import QDesktopServices

from slimscope.resources import DEMO_MODEL

JOB_TIMEOUT = 30_000


@pytest.fixture
def opened_urls(monkeypatch):
    urls = []
    monkeypatch.setattr(QDesktopServices, "openUrl", lambda url: urls.append(url.toString()) or True)
    return urls


def _status(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status


def _refused(url):
    try:
        urllib.request.urlopen(url, timeout=10).close()
    except urllib.error.URLError as error:
        return isinstance(error.reason, ConnectionRefusedError)
    return False


def test_open_graph_serves_the_model_and_closing_stops_it(
    qtbot, open_and_wait, window, opened_urls, error_calls
):
    action = window.actions_by_key["netron"]
    assert not action.isEnabled()  # no model yet
    open_and_wait(window, DEMO_MODEL)
    assert action.isEnabled()
    action.trigger()
    assert error_calls == []
    assert len(opened_urls) == 1 and opened_urls[0].startswith("http://127.0.0.1:")
    url = opened_urls[0]
    assert _status(url + "/") == 200
    assert url in window.statusBar().currentMessage()
    folder = window.netron.folder
    served = onnx.load(folder / DEMO_MODEL.name) if (folder / DEMO_MODEL.name).exists() else None
    assert folder.resolve() != DEMO_MODEL.parent.resolve()
    assert served is not None and len(served.graph.node) == len(window.session.loaded.model.graph.node)

    window.actions_by_key["quit"].trigger()  # closes the window: the path the app's quit takes
    assert _refused(url + "/") and not folder.exists()


def test_optimized_model_and_a_model_change_stop_the_server(
    qtbot, open_and_wait, window, opened_urls, error_calls
):
    action = window.actions_by_key["netron_optimized"]
    open_and_wait(window, DEMO_MODEL)
    qtbot.waitUntil(lambda: window.session.result_is_current, timeout=JOB_TIMEOUT)
    assert action.isEnabled()
    action.trigger()
    assert error_calls == [] and len(opened_urls) == 1
    assert [p.name for p in window.netron.folder.iterdir()] == [f"{DEMO_MODEL.stem}.optimized.onnx"]
    assert _status(opened_urls[0] + "/") == 200

    window.session.set_model(None)  # the model changes: the served graph is stale
    assert _refused(opened_urls[0] + "/")
    assert not action.isEnabled() and not window.actions_by_key["netron"].isEnabled()
