"""The real ``fal_client`` against local servers, every public call, sync and async:
``use_fal_client`` scoped per server (two servers at once, each reached by its own app id),
keyed servers, uploads stored and served back by the server, ``ws_connect``, and fal-js's
proxy protocol (``x-fal-target-url``) answered by the app itself."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import WebSocket
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

import falkit as fal
from falkit.asgi import storage
from falkit.compat import use_fal_client
from falkit.toolkit import File

fal_client = pytest.importorskip("fal_client")
import fal_client.client as fal_client_module  # noqa: E402


class Input(BaseModel):
    prompt: str


class FileInput(BaseModel):
    file: File


def _app(name: str) -> type[fal.App]:
    class Named(fal.App):
        app_name = name

        @fal.endpoint("/")
        def generate(self, input: Input) -> dict:
            return {"server": name, "output": input.prompt}

        @fal.endpoint("/size")
        def size(self, input: FileInput) -> dict:
            data = input.file.as_bytes()
            return {"size": len(data), "head": data[:4].hex()}

        @fal.endpoint("/stream")
        async def stream(self, input: Input) -> StreamingResponse:
            async def events() -> AsyncIterator[str]:
                for ch in input.prompt:
                    yield f"data: {json.dumps({'ch': ch, 'server': name})}\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        @fal.endpoint("/ws", is_websocket=True)
        async def ws(self, websocket: WebSocket) -> None:
            await websocket.accept()
            async for text in websocket.iter_text():
                await websocket.send_text(f"{name}:{text}")

        @fal.realtime("/realtime")
        def realtime(self, input: Input) -> dict:
            return {"server": name, "output": input.prompt}

    return Named


Alpha, Beta = _app("alpha-app"), _app("beta-app")


# -- use_fal_client per server -------------------------------------------------------------


def test_two_servers_at_once_each_get_their_own_calls(serve):
    alpha, beta = serve(Alpha), serve(Beta)
    before = fal_client_module.RUN_URL_FORMAT
    with use_fal_client(alpha) as a_id, use_fal_client(beta) as b_id:
        assert fal_client.run(a_id, {"prompt": "1"}) == {"server": "alpha-app", "output": "1"}
        assert fal_client.run(b_id, {"prompt": "2"}) == {"server": "beta-app", "output": "2"}
        assert fal_client.submit(a_id, {"prompt": "3"}).get()["server"] == "alpha-app"
        assert fal_client.subscribe(b_id, {"prompt": "4"})["server"] == "beta-app"
        with fal_client.realtime(a_id) as rt:
            rt.send({"prompt": "5"})
            assert rt.recv()["server"] == "alpha-app"
        events = list(fal_client.stream(b_id, {"prompt": "ab"}))
        assert [e["server"] for e in events] == ["beta-app", "beta-app"]
    assert before == fal_client_module.RUN_URL_FORMAT  # put back when the last block ended


def test_blocks_opened_and_closed_in_other_threads_stay_separate(serve):
    alpha, beta = serve(Alpha), serve(Beta)
    results: dict[str, list[str]] = {"alpha": [], "beta": []}
    started = threading.Barrier(2, timeout=20)

    def use(server: fal.Server, key: str) -> None:
        with use_fal_client(server) as app_id:
            started.wait()
            for i in range(5):
                results[key].append(fal_client.run(app_id, {"prompt": str(i)})["server"])
            started.wait()

    threads = [
        threading.Thread(target=use, args=(alpha, "alpha")),
        threading.Thread(target=use, args=(beta, "beta")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {"alpha": ["alpha-app"] * 5, "beta": ["beta-app"] * 5}


def test_async_calls_with_two_servers(serve):
    alpha, beta = serve(Alpha), serve(Beta)

    async def calls(a_id: str, b_id: str) -> list[object]:
        client = fal_client.AsyncClient()
        out: list[object] = [
            (await client.run(a_id, {"prompt": "x"}))["server"],
            (await client.subscribe(b_id, {"prompt": "y"}))["server"],
        ]
        handle = await client.submit(a_id, {"prompt": "z"})
        out.append((await handle.get())["server"])
        out.append([e["ch"] async for e in client.stream(b_id, {"prompt": "hi"})])
        async with client.realtime(b_id) as rt:
            await rt.send({"prompt": "rt"})
            out.append((await rt.recv())["server"])
        async with client.ws_connect(a_id, path="/ws") as ws:
            await ws.send("w")
            out.append(await ws.recv())
        # fal_client never closes its async HTTP pool itself
        await (await client._client).aclose()
        return out

    with use_fal_client(alpha) as a_id, use_fal_client(beta) as b_id:
        out = asyncio.run(calls(a_id, b_id))
    assert out == ["alpha-app", "beta-app", "alpha-app", ["h", "i"], "beta-app", "alpha-app:w"]


def test_ws_connect_sync(serve):
    server = serve(Alpha)
    with use_fal_client(server) as app_id, fal_client.ws_connect(app_id, path="/ws") as ws:
        ws.send("hello")
        assert ws.recv() == "alpha-app:hello"


def test_a_server_that_needs_a_key_gets_it_from_the_routing(serve, capfd):
    server = serve(Alpha, host="0.0.0.0")
    capfd.readouterr()
    assert server.api_key
    with use_fal_client(server) as app_id:
        assert fal_client.run(app_id, {"prompt": "k"})["output"] == "k"
        with fal_client.realtime(app_id) as rt:
            rt.send({"prompt": "rk"})
            assert rt.recv()["output"] == "rk"
    # without the routing, fal_client's own key is refused
    refused = httpx.post(f"http://127.0.0.1:{server.port}/", json={"prompt": "x"}, timeout=10)
    assert refused.status_code == 401


# -- uploads, stored and served back -------------------------------------------------------


# fal_client's CDN uploads open an httpx.Client per call (SyncClient._get_cdn_client) that it
# never closes: its sockets are found unclosed by the garbage collector. fal_client's leak,
# not the server's: the server side is checked by the assertions.
_FAL_CLIENT_LEAKS = [
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


def _png() -> bytes:
    Image = pytest.importorskip("PIL.Image")
    out = io.BytesIO()
    Image.new("RGB", (3, 2), (200, 10, 10)).save(out, format="PNG")
    return out.getvalue()


@_FAL_CLIENT_LEAKS[0]
@_FAL_CLIENT_LEAKS[1]
def test_uploads_are_served_back_and_readable_by_the_app(serve, tmp_path):
    server = serve(Alpha)
    PNG = _png()
    path = tmp_path / "dot.png"
    path.write_bytes(PNG)
    with use_fal_client(server) as app_id:
        urls = [
            fal_client.upload(b"hello bytes", "text/plain", file_name="note.txt"),
            fal_client.upload_file(path),
            fal_client.upload(b"via storage", "text/plain", repository="fal"),
        ]
        from PIL import Image

        urls.append(fal_client.upload_image(Image.open(io.BytesIO(PNG)), format="png"))
        assert all(url.startswith(server.url + "/.fal/files/") for url in urls)
        with httpx.Client(timeout=10) as http:
            note, png, stored, image = (http.get(url) for url in urls)
        assert note.content == b"hello bytes" and note.headers["content-type"] == "text/plain"
        assert png.content == PNG and png.headers["content-type"] == "image/png"
        assert stored.content == b"via storage"
        assert image.headers["content-type"] == "image/png" and image.content[:4] == PNG[:4]
        # the URL goes into an App's input, as it would on fal; the App reads it back
        answer = fal_client.run(app_id, {"file": {"url": urls[1]}}, path="/size")
        assert answer == {"size": len(PNG), "head": PNG[:4].hex()}


@_FAL_CLIENT_LEAKS[0]
@_FAL_CLIENT_LEAKS[1]
def test_async_uploads(serve, tmp_path):
    server = serve(Alpha)
    path = tmp_path / "blob.bin"
    path.write_bytes(b"\x00\x01" * 1000)

    async def upload() -> list[str]:
        client = fal_client.AsyncClient()
        urls = [await client.upload(b"async", "text/plain"), await client.upload_file(path)]
        await (await client._client).aclose()  # fal_client never closes it itself
        return urls

    with use_fal_client(server):
        urls = asyncio.run(upload())
    with httpx.Client(timeout=10) as http:
        assert http.get(urls[0]).content == b"async"
        assert http.get(urls[1]).content == b"\x00\x01" * 1000


def test_an_oversize_upload_is_refused_and_the_store_is_bounded(serve, monkeypatch):
    monkeypatch.setattr(storage, "MAX_FILE_BYTES", 1024)
    server = serve(Alpha)
    with use_fal_client(server), pytest.raises(Exception) as refused:
        fal_client.upload(b"x" * 4096, "application/octet-stream", repository="fal")
    assert "not kept by the local server" in str(refused.value)
    store = storage.FileStore(max_bytes=3000)
    keys = [store.reserve(f"f{i}", "text/plain") for i in range(4)]
    for key in keys:
        store.put(key, b"x" * 1000)
    assert store.stored_bytes <= 3000
    assert store.get(keys[0]) is None and store.get(keys[-1]) is not None


def test_an_unknown_file_is_404(serve):
    server = serve(Alpha)
    response = httpx.get(server.url + "/.fal/files/0000/nothing.txt", timeout=10)
    assert response.status_code == 404


# -- fal-js's proxy protocol ---------------------------------------------------------------


def test_the_proxy_protocol_reaches_routes_queue_and_storage(serve):
    server = serve(Alpha)
    app = f"local/{server.app_name}"
    proxy = server.url + "/.fal/proxy"
    with httpx.Client(timeout=10) as http:

        def via(method: str, target: str, **kw: object) -> httpx.Response:
            return http.request(method, proxy, headers={"x-fal-target-url": target}, **kw)

        ran = via("POST", f"https://fal.run/{app}", json={"prompt": "p"})
        assert ran.json() == {"server": "alpha-app", "output": "p"}
        queued = via("POST", f"https://queue.fal.run/{app}", json={"prompt": "q"}).json()
        assert queued["status"] == "IN_QUEUE"
        status_path = f"https://queue.fal.run/{app}/requests/{queued['request_id']}"
        for _ in range(200):
            if via("GET", status_path + "/status").json()["status"] == "COMPLETED":
                break
        assert via("GET", status_path).json() == {"server": "alpha-app", "output": "q"}
        token = via("POST", "https://rest.fal.ai/tokens/", json={"allowed_apps": ["x"]})
        assert token.status_code in (200, 201)
        started = via(
            "POST",
            "https://rest.fal.ai/storage/upload/initiate?storage_type=fal-cdn-v3",
            json={"file_name": "a.txt", "content_type": "text/plain"},
        ).json()
        assert (
            http.put(
                started["upload_url"], content=b"up", headers={"content-type": "text/plain"}
            ).status_code
            == 200
        )
        assert http.get(started["file_url"]).content == b"up"


@pytest.mark.parametrize(
    "target", ["https://example.com/steal", "http://127.0.0.1:22/", "https://fal.ai.evil.test/x"]
)
def test_the_proxy_goes_nowhere_but_fal_urls(serve, target):
    server = serve(Alpha)
    response = httpx.post(
        server.url + "/.fal/proxy", headers={"x-fal-target-url": target}, json={}, timeout=10
    )
    assert response.status_code == 403 and "not a fal URL" in response.json()["detail"]
    missing = httpx.post(server.url + "/.fal/proxy", json={}, timeout=10)
    assert missing.status_code == 400


def test_the_proxy_is_for_listed_origins_only(serve):
    front = "http://localhost:5173"
    server = serve(Alpha, cors_origins=[front])
    target = {"x-fal-target-url": f"https://fal.run/local/{server.app_name}"}
    with httpx.Client(timeout=10) as http:
        preflight = http.options(
            server.url + "/.fal/proxy",
            headers={
                "Origin": front,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-fal-target-url",
            },
        )
        assert preflight.status_code == 204
        assert "x-fal-target-url" in preflight.headers["access-control-allow-headers"]
        ok = http.post(
            server.url + "/.fal/proxy", json={"prompt": "o"}, headers={**target, "Origin": front}
        )
        assert ok.json()["output"] == "o" and ok.headers["access-control-allow-origin"] == front
        other = http.post(
            server.url + "/.fal/proxy",
            json={"prompt": "o"},
            headers={**target, "Origin": "http://localhost:9999"},
        )
        assert other.status_code == 403
