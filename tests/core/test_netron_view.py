"""`NetronView`: serves the model on loopback from a private temporary folder, and stop() undoes it all."""

from __future__ import annotations

import http.client
import os
import re
import shutil
import socket
import stat
import struct
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import onnx
import pytest

from slimscope.core import export
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


# ---------------------------------------------------------------------------------------------------
# What the server exposes: one listener on loopback, the model copy and nothing else, all gone after stop.


def _listening_addresses(port: int) -> list[str]:
    """Addresses with a TCP socket in LISTEN state on `port`, from the kernel's socket tables."""
    found = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, local_port = local.split(":")
            if state == "0A" and int(local_port, 16) == port:  # 0A: TCP_LISTEN
                # each 32-bit word is printed as the host-order integer of its network-order bytes
                words = [int(address[i : i + 8], 16) for i in range(0, len(address), 8)]
                found.append(socket.inet_ntop(family, b"".join(struct.pack("=I", w) for w in words)))
    return found


needs_socket_table = pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="no /proc/net/tcp here")


@needs_socket_table
def test_the_only_listener_is_on_127_0_0_1(view):
    view.show(DEMO_MODEL, DEMO_MODEL.name)
    assert view.address is not None
    assert _listening_addresses(view.address[1]) == ["127.0.0.1"]  # not 0.0.0.0, not ::, nothing on IPv6


def _raw_get(address: tuple[str, int], path: str) -> tuple[int, bytes]:
    """GET `path` exactly as written (urllib would not send every one of these unchanged)."""
    connection = http.client.HTTPConnection(*address, timeout=10)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_a_file_beside_the_source_is_not_reachable(view, tmp_path, audit):
    folder = tmp_path / "models"
    folder.mkdir()
    source = Path(shutil.copy(DEMO_MODEL, folder / "net.onnx"))
    secret = folder / "secret.txt"
    secret.write_text("the user's secret")
    with audit() as log:
        view.show(source, source.name)
        assert view.address is not None and view.folder is not None
        absolute = str(secret)
        escapes = [
            "/secret.txt", "/data/secret.txt", "/data/../secret.txt", "/data/%2e%2e/secret.txt",
            "/data/..%2fsecret.txt", "/data/%2e%2e%2fsecret.txt", "/data/" + urllib.parse.quote(absolute, safe=""),
            "/data/" + absolute, "/data/" + "../" * 12 + absolute.lstrip("/"),
            "/data/" + "..%2f" * 12 + urllib.parse.quote(absolute.lstrip("/"), safe=""),
            "/" + "../" * 12 + absolute.lstrip("/"), "/%2e%2e/" * 12 + absolute.lstrip("/"),
            "/data/" + "../" * 12 + str(folder).lstrip("/") + "/secret.txt",
        ]  # fmt: skip
        answers = {path: _raw_get(view.address, path) for path in escapes}
        model = _raw_get(view.address, "/data/net.onnx")
    assert model == (200, source.read_bytes())
    reached = {path: status for path, (status, body) in answers.items() if status != 404 or b"secret" in body}
    assert reached == {}
    assert sorted(p.name for p in view.folder.iterdir()) == ["net.onnx"]
    assert os.path.realpath(secret) not in log.opened  # the server never even opened it


@needs_socket_table
def test_after_stop_the_port_is_closed_and_the_folder_gone(view):
    view.show(DEMO_MODEL, DEMO_MODEL.name)
    assert view.address is not None and view.folder is not None
    address, folder = view.address, view.folder
    assert _listening_addresses(address[1]) == ["127.0.0.1"]
    view.stop()
    assert _listening_addresses(address[1]) == []
    with pytest.raises(ConnectionRefusedError), socket.create_connection(address, timeout=5):
        pass
    assert not folder.exists()
    assert view.address is None and view.folder is None and view.model_url is None


def test_a_name_with_spaces_unicode_hash_and_percent_is_served_under_an_encoded_url(view):
    url = view.show(onnx.load(DEMO_MODEL), "数字 net #1 100%.onnx")
    assert view.folder is not None and [p.name for p in view.folder.iterdir()] == ["数字 net _1 100_.onnx"]
    status, page = _get(url + "/")
    [file_meta] = re.findall(r'<meta name="file" content="([^"]*)">', page.decode())
    assert file_meta == "/data/数字 net _1 100_.onnx"
    # the page fetches that path as a browser would: percent-encoded; so does model_url
    assert view.model_url == url + urllib.parse.quote(file_meta)
    status, served = _get(view.model_url)
    assert status == 200 and onnx.load_model_from_string(served).graph == onnx.load(DEMO_MODEL).graph


def test_a_model_over_the_single_file_limit_is_served_with_its_weights_beside_it(view, monkeypatch):
    monkeypatch.setattr(export, "SINGLE_FILE_LIMIT", 1000)
    model = onnx.load(DEMO_MODEL)
    view.show(model, "big.onnx")
    assert view.folder is not None
    assert sorted(p.name for p in view.folder.iterdir()) == ["big.onnx", "big.onnx.data"]
    assert all(
        t.HasField("raw_data") for t in model.graph.initializer if t.dims
    )  # the caller's model is intact
    status, data = _get(f"{view.url}/data/big.onnx.data")
    assert status == 200 and len(data) == (view.folder / "big.onnx.data").stat().st_size
