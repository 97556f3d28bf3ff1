"""Who may use the server: tokens, hello first, browser origins, model names that are not paths, frame sizes.

tests/test_server.py checks the basics (a wrong token is refused, a public bind needs a token, an
unknown origin is refused); these add the edges.
"""

from __future__ import annotations

import uuid

import msgpack
import pytest
import websockets
import websockets.sync.client

from server.config import ServerConfig
from shared import codec
from shared.client import Client
from shared.messages import Cancel, Error, Generate, Hello, Image, Limits, ListModels, Live, LiveStop, Welcome
from testing.serving import nothing_queued, running_server, url

TOKEN = "s3cret-token"
ORIGIN = "https://krita.example"
MAX_MESSAGE = 256 * 1024


@pytest.fixture(scope="module")
def server(models_dir, tmp_path_factory):
    config = ServerConfig(models=[models_dir], outputs=tmp_path_factory.mktemp("outputs"), token=TOKEN,
                          allowed_origins=(ORIGIN,), limits=Limits(max_message=MAX_MESSAGE))
    with running_server(config) as running:
        yield running


def reply_to(ws, message) -> object:
    ws.send(codec.encode(message))
    return codec.decode_server(ws.recv(timeout=10))


@pytest.mark.parametrize("token", ["wrong", None, "", TOKEN + " ", TOKEN.upper(), TOKEN[:-1], "é" * 12])
def test_a_wrong_or_missing_token_gets_unauthorized_and_the_connection_closes(server, token):
    with websockets.sync.client.connect(url(server)) as ws:
        error = reply_to(ws, Hello(protocol=1, client="intruder", token=token))
        assert isinstance(error, Error) and (error.code, error.field) == ("unauthorized", "token")
        with pytest.raises(websockets.ConnectionClosed):
            ws.recv(timeout=10)
    assert nothing_queued(server, TOKEN)


def job(**fields) -> Generate:
    return Generate(**{"id": uuid.uuid4().hex, "mode": "txt2img", "model": "tiny-sd15", "width": 64, "height": 64,
                       "steps": 1, **fields})


PIXELS = Image(width=8, height=8, format="rgba8", data=b"\x80" * 256)
BEFORE_HELLO = [ListModels(), job(), Cancel(id="x"),
                Live(session="s", id="y", mode="img2img", model="tiny-sd15", image=PIXELS), LiveStop(session="s")]


@pytest.mark.parametrize("message", BEFORE_HELLO, ids=[m.TYPE for m in BEFORE_HELLO])
def test_every_request_before_hello_is_refused(server, message):
    with websockets.sync.client.connect(url(server)) as ws:
        error = reply_to(ws, message)
        assert isinstance(error, Error) and error.code == "unauthorized"
        assert nothing_queued(server, TOKEN)
        # The connection stays open for a proper hello.
        assert isinstance(reply_to(ws, Hello(protocol=1, client="late", token=TOKEN)), Welcome)


@pytest.mark.parametrize(("origin", "allowed"), [
    (None, True),  # not a browser: the plugin and scripts send no Origin
    (ORIGIN, True),
    ("https://evil.example", False),
    ("null", False),  # sandboxed iframes and file:// pages
    (ORIGIN + ".evil.example", False),
    ("http://krita.example", False),
    ("http://localhost:8080", False),
])
def test_browser_origins_are_checked_against_the_allow_list(server, origin, allowed):
    if allowed:
        with websockets.sync.client.connect(url(server), origin=origin) as ws:
            assert isinstance(reply_to(ws, Hello(protocol=1, client="page", token=TOKEN)), Welcome)
    else:
        with pytest.raises(websockets.InvalidStatus) as refused:
            websockets.sync.client.connect(url(server), origin=origin)
        assert refused.value.response.status_code == 403


@pytest.mark.parametrize("name", ["../tiny-sd15", "checkpoints/tiny-sd15", "checkpoints\\tiny-sd15", "..",
                                  "tiny-sd15/..", "/etc/passwd", "C:\\Windows\\win.ini", "tiny-sd15\x00",
                                  "..\\..\\secrets", "~/models/x"])
def test_model_names_that_look_like_paths_are_rejected(server, name):
    with Client(url(server), token=TOKEN) as client:
        request = job(model=name)
        client.send(request)
        error = client.receive(timeout=10)
    assert isinstance(error, Error)
    assert (error.code, error.field, error.id) == ("bad_request", "model", request.id)


def test_an_absolute_path_to_a_real_model_is_not_a_model_name(server, models_dir):
    with Client(url(server), token=TOKEN) as client:
        request = job(model=str(models_dir / "checkpoints" / "tiny-sd15"))
        client.send(request)
        error = client.receive(timeout=10)
    assert (error.code, error.field) == ("bad_request", "model")


@pytest.mark.parametrize(("host", "needs_token"), [
    ("127.0.0.1", False), ("127.0.0.2", False), ("::1", False), ("localhost", False),
    ("0.0.0.0", True), ("::", True), ("192.168.1.20", True), ("10.0.0.1", True), ("my-laptop.local", True),
])
def test_only_loopback_binds_run_without_a_token(host, needs_token):
    config = ServerConfig(host=host)
    if needs_token:
        with pytest.raises(ValueError, match="--token"):
            config.check()
        ServerConfig(host=host, token="x").check()
    else:
        config.check()


def test_a_frame_over_the_size_limit_closes_only_that_connection(server):
    with Client(url(server), token=TOKEN) as bystander:
        with websockets.sync.client.connect(url(server), max_size=None) as ws:
            reply_to(ws, Hello(protocol=1, client="big", token=TOKEN))
            ws.send(msgpack.packb({"type": "models", "pad": b"\x00" * (MAX_MESSAGE + 1)}))
            with pytest.raises(websockets.ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd.code == 1009  # message too big
        assert bystander.models()
