"""Safe defaults over real sockets: API keys off the loopback, CORS and WebSocket origins
closed unless listed, a body limit answered with 413, no kernel internals in any answer."""

from __future__ import annotations

import httpx
import pytest
from fastapi import WebSocket
from pydantic import BaseModel
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import falkit
import falkit as fal
from falkit import RemoteError, ServerError
from falkit.asgi import SecuritySpec


class Input(BaseModel):
    prompt: str


class Guarded(fal.App):
    @fal.endpoint("/")
    def generate(self, input: Input) -> dict:
        return {"output": input.prompt}

    @fal.endpoint("/boom")
    def boom(self, input: Input) -> dict:
        secret = "kernel-secret-value"
        raise RuntimeError(f"leaked {secret}")

    @fal.endpoint("/ws", is_websocket=True)
    async def ws(self, websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"hello": "world"})
        await websocket.close()

    @fal.realtime("/realtime")
    def rt(self, input: Input) -> dict:
        return {"output": input.prompt}


def _loopback_url(server: falkit.Server) -> str:
    return f"http://127.0.0.1:{server.port}"


def test_loopback_default_needs_no_key_and_prints_nothing(serve, capfd):
    server = serve(Guarded)
    assert server.api_key is None
    assert httpx.post(server.url + "/", json={"prompt": "a"}).json() == {"output": "a"}
    assert "WARNING" not in capfd.readouterr().err


def test_public_host_generates_a_key_says_where_it_is_and_requires_it(serve, capfd):
    server = serve(Guarded, host="0.0.0.0")
    key = server.api_key
    assert key and len(key) >= 32
    err = capfd.readouterr().err
    # The key itself is never printed (a notebook saves its outputs): its start, and where
    # to read it (tests/test_attacks.py checks a saved notebook too).
    assert key not in err and key[:4] in err and ".api_key" in err
    assert "WARNING" in err and "reachable from the network" in err
    url = _loopback_url(server)
    for headers in ({}, {"Authorization": "Key wrong"}, {"Authorization": f"Bearer {key}"}):
        r = httpx.post(url + "/", json={"prompt": "a"}, headers=headers)
        assert r.status_code == 401, headers
        assert "Authorization: Key" in r.json()["detail"]
        assert r.headers["www-authenticate"] == "Key"
    assert httpx.get(url + "/health").status_code == 401  # every request, /health too
    good = {"Authorization": f"Key {key}"}
    assert httpx.post(url + "/", json={"prompt": "a"}, headers=good).json() == {"output": "a"}
    # server.client picks the key up: HTTP, WebSocket and realtime
    client = falkit.Client(url, headers=server.client.headers)
    assert client.call("/", {"prompt": "b"}) == {"output": "b"}
    assert server.client.call("/", {"prompt": "c"}) == {"output": "c"}
    with client.websocket("/ws") as ws:
        assert ws.recv() == '{"hello":"world"}'
    with client.realtime("/realtime") as rt:
        rt.send({"prompt": "d"})
        assert rt.recv() == {"output": "d"}
    client.close()


def test_websocket_without_the_key_is_refused_at_the_handshake(serve, capfd):
    server = serve(Guarded, host="0.0.0.0")
    capfd.readouterr()
    url = f"ws://127.0.0.1:{server.port}"
    for path in ("/ws", "/realtime"):
        with pytest.raises(InvalidStatus) as info:
            connect(url + path, open_timeout=5).close()
        assert info.value.response.status_code == 403
    assert httpx.post(
        _loopback_url(server) + "/", json={"prompt": "x"}, headers=server.client.headers
    ).json() == {"output": "x"}


def test_serving_again_keeps_the_key_and_auth_false_turns_it_off(serve, capfd):
    server = serve(Guarded, host="0.0.0.0")
    key = server.api_key
    again = serve(Guarded, host="0.0.0.0")
    assert again is server and again.api_key == key
    capfd.readouterr()
    open_server = serve(Guarded, host="0.0.0.0", auth=False)
    assert open_server.api_key is None
    assert "NO key" in capfd.readouterr().err
    r = httpx.post(_loopback_url(open_server) + "/", json={"prompt": "a"})
    assert r.json() == {"output": "a"}


def test_an_explicit_key_on_loopback(serve):
    server = serve(Guarded, auth="my-key")
    assert httpx.post(server.url + "/", json={"prompt": "a"}).status_code == 401
    assert server.client.call("/", {"prompt": "a"}) == {"output": "a"}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"auth": ""},
        {"auth": "has space"},
        {"auth": 3},
        {"cors_origins": ["example.com"]},
        {"cors_origins": ["http://example.com/path"]},
        {"max_body_size": 0},
        {"max_body_size": "big"},
    ],
)
def test_malformed_security_options_are_one_line_errors(kwargs):
    with pytest.raises(ServerError) as info:
        falkit.serve(Guarded, **kwargs)
    assert "\n" not in str(info.value)
    assert falkit.servers() == {}


def test_cors_is_closed_by_default_and_foreign_origins_are_refused(serve):
    server = serve(Guarded)
    evil = {"Origin": "http://evil.example"}
    r = httpx.post(server.url + "/", json={"prompt": "a"}, headers=evil)
    assert r.status_code == 403 and "cors_origins" in r.json()["detail"]
    assert "access-control-allow-origin" not in r.headers
    pre = httpx.options(server.url + "/", headers={**evil, "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 403
    # the server's own pages (/docs) are same-origin and pass
    own = {"Origin": server.url}
    assert httpx.post(server.url + "/", json={"prompt": "a"}, headers=own).status_code == 200
    # non-browser clients send no Origin
    assert server.client.call("/", {"prompt": "a"}) == {"output": "a"}


def test_cors_allow_list_answers_preflight_and_tags_responses(serve):
    server = serve(Guarded, cors_origins=["http://localhost:3000"])
    ok = {"Origin": "http://localhost:3000"}
    pre = httpx.options(server.url + "/", headers={**ok, "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "authorization" in pre.headers["access-control-allow-headers"]
    r = httpx.post(server.url + "/", json={"prompt": "a"}, headers=ok)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ok["Origin"]
    bad = httpx.post(server.url + "/", json={"prompt": "a"}, headers={"Origin": "http://x.y"})
    assert bad.status_code == 403


def test_websocket_origins_are_checked_the_same_way(serve):
    server = serve(Guarded, cors_origins=["https://app.example"])
    url = f"ws://127.0.0.1:{server.port}"
    with pytest.raises(InvalidStatus) as info:
        connect(url + "/ws", origin="https://evil.example", open_timeout=5).close()
    assert info.value.response.status_code == 403
    with connect(url + "/ws", origin="https://app.example", open_timeout=5) as ws:
        assert ws.recv() == '{"hello":"world"}'
    with connect(url + "/ws", open_timeout=5) as ws:  # no Origin: not a browser
        assert ws.recv() == '{"hello":"world"}'


def test_body_over_the_limit_gets_413_then_the_server_keeps_serving(serve):
    server = serve(Guarded, max_body_size=1000)
    big = {"prompt": "x" * 2000}
    r = httpx.post(server.url + "/", json=big)
    assert r.status_code == 413 and "max_body_size" in r.json()["detail"]

    def chunks():  # no Content-Length: the limit still holds
        for _ in range(10):
            yield b'{"prompt": "' + b"y" * 200 + b'"}'

    r = httpx.post(server.url + "/", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    small_chunked = httpx.post(
        server.url + "/",
        content=iter([b'{"prompt":', b' "ok"}']),
        headers={"content-type": "application/json"},
    )
    assert small_chunked.json() == {"output": "ok"}
    assert server.client.call("/", {"prompt": "fine"}) == {"output": "fine"}


def test_default_limit_is_64_mib_and_none_disables_it(serve):
    assert SecuritySpec().max_body_size == 64 * 1024 * 1024
    server = serve(Guarded, max_body_size=None)
    assert server.client.call("/", {"prompt": "z" * 100_000}) == {"output": "z" * 100_000}


def test_tracebacks_and_kernel_state_never_reach_the_client(serve):
    server = serve(Guarded)
    with pytest.raises(RemoteError) as info:
        server.client.call("/boom", {"prompt": "a"})
    assert info.value.status == 500 and info.value.detail == "Internal Server Error"
    r = httpx.post(server.url + "/boom", json={"prompt": "a"})
    assert "kernel-secret-value" not in r.text and "Traceback" not in r.text
    assert "kernel-secret-value" in server.logs()  # where the user looks instead
    # no route serves files, the environment or the namespace
    for path in ("/../../etc/passwd", "/%2e%2e/etc/passwd", "/env", "/globals", "/static/x"):
        assert httpx.get(server.url + path).status_code in (404, 405), path
    paths = set(server.client.get("/openapi.json")["paths"])
    assert paths == {"/", "/boom", "/health"} | {p for p in paths if p in ("/ws", "/realtime")}


def test_the_playground_sends_the_key(serve):
    from falkit.playground.context import Context

    server = serve(Guarded, auth="play-key")
    ctx = Context.of(server)
    try:
        assert ctx.openapi_error == "" and "/" in ctx.openapi["paths"]
        assert ctx.client.call("/", {"prompt": "p"}) == {"output": "p"}
    finally:
        ctx.client.close()
