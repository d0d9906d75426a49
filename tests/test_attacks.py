"""An attacker on loopback, against a default ``falkit.serve(App)``: a web page doing DNS
rebinding, slow and silent clients, too many connections, huge headers, compression bombs,
hostile bodies, and the API key landing in a notebook. Each case drives real sockets the way
an attacker would, then checks the server still serves, with threads, file descriptors and
RSS measured before and after."""

from __future__ import annotations

import gc
import json
import os
import resource
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import nbformat
import pytest
from _support import poller
from fastapi import WebSocket
from nbclient import NotebookClient
from pydantic import BaseModel
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

import falkit as fal
from falkit.asgi import gateway

# -- the app under attack -------------------------------------------------------------------


class Input(BaseModel):
    prompt: str


CALLS: list[str] = []  # every handler run, so a refused request provably ran none


class Target(fal.App):
    @fal.endpoint("/")
    def generate(self, input: Input) -> dict:
        CALLS.append(input.prompt)
        return {"output": input.prompt}

    @fal.endpoint("/big")
    def big(self, input: Input) -> dict:
        return {"output": "x" * (4 * 1024 * 1024)}

    @fal.endpoint("/ws", is_websocket=True)
    async def ws(self, websocket: WebSocket) -> None:
        await websocket.accept()
        async for message in websocket.iter_bytes():
            CALLS.append(f"ws:{len(message)}")
            await websocket.send_bytes(b"got %d" % len(message))

    @fal.realtime("/realtime")
    def realtime(self, input: Input) -> dict:
        CALLS.append("rt:" + input.prompt)
        return {"output": input.prompt}


@pytest.fixture(autouse=True)
def _fresh_calls() -> Iterator[None]:
    CALLS.clear()
    yield
    CALLS.clear()


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _threads() -> int:
    return threading.active_count()


def _still_serves(server: fal.Server) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.post("/", json={"prompt": "after"}).json() == {"output": "after"}
    with server.client.realtime("/realtime") as rt:
        rt.send({"prompt": "rt-after"})
        assert rt.recv(10) == {"output": "rt-after"}


def _raw(server: fal.Server, data: bytes, *, read_s: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection and read what comes back until it closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=read_s) as sock:
        sock.sendall(data)
        return _read_all(sock, read_s)


def _read_all(sock: socket.socket, read_s: float) -> bytes:
    chunks, deadline = [], time.monotonic() + read_s
    sock.settimeout(read_s)
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:100]
    return int(answer.split(b" ", 2)[1])


def _body_of(answer: bytes) -> dict:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


# -- DNS rebinding: the Host allow-list ---------------------------------------------------


def test_dns_rebinding_is_refused_before_any_handler(serve):
    server = serve(Target)
    evil = f"attacker.example:{server.port}"
    headers = {"Host": evil, "Origin": f"http://{evil}"}
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for method, path in (("GET", "/openapi.json"), ("GET", "/docs"), ("POST", "/")):
            response = http.request(method, path, headers=headers, json={"prompt": "pwn"})
            assert response.status_code == 403, (method, path)
            assert "attacker.example" in response.json()["detail"]
            assert "allowed_hosts" in response.json()["detail"]
        # no Origin at all (a navigation, or a simple form post from the rebound page)
        assert http.post("/", headers={"Host": evil}, json={"prompt": "pwn"}).status_code == 403
    for path in ("/ws", "/realtime"):
        with pytest.raises(InvalidStatus) as refused:
            connect(
                f"ws://127.0.0.1:{server.port}{path}",
                additional_headers={"Host": evil, "Origin": f"http://{evil}"},
                open_timeout=5,
            ).close()
        assert refused.value.response.status_code == 403
    assert CALLS == []  # no handler ran
    _still_serves(server)


@pytest.mark.parametrize(
    "host", ["localhost", "127.0.0.1", "127.0.0.2", "[::1]", "app.localhost", "LOCALHOST."]
)
def test_loopback_names_and_addresses_are_served(serve, host):
    server = serve(Target)
    response = httpx.post(
        server.url + "/",
        json={"prompt": "hi"},
        headers={"Host": f"{host}:{server.port}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("host", ["192.168.1.5", "10.0.0.1", "example.com", "127.0.0.1.nip.io"])
def test_other_names_and_addresses_are_refused_on_a_loopback_bind(serve, host):
    server = serve(Target)
    response = httpx.get(
        server.url + "/health", headers={"Host": f"{host}:{server.port}"}, timeout=10
    )
    assert response.status_code == 403


def test_allowed_hosts_lets_a_listed_name_in(serve):
    server = serve(Target, allowed_hosts=["devbox.test"])
    with httpx.Client(base_url=server.url, timeout=10) as http:
        ok = http.post("/", json={"prompt": "hi"}, headers={"Host": f"devbox.test:{server.port}"})
        assert ok.json() == {"output": "hi"}
        assert http.get("/health", headers={"Host": "other.test"}).status_code == 403


def test_allow_host_is_a_fal_serve_flag_too():
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    shell = InteractiveShell.instance()
    fal.load_ipython_extension(shell)
    shell.user_ns["Target"] = Target
    try:
        with capture_output():
            result = shell.run_cell("%fal serve Target --allow-host devbox.test")
        assert result.success, result.error_in_exec
        server = fal.get_server("Target")
        headers = {"Host": f"devbox.test:{server.port}"}
        assert httpx.get(server.url + "/health", headers=headers, timeout=10).status_code == 200
    finally:
        fal.stop_all()


def test_an_origin_of_another_scheme_is_foreign(serve):
    server = serve(Target)
    own = f"127.0.0.1:{server.port}"
    with httpx.Client(base_url=server.url, timeout=10) as http:
        same = http.post("/", json={"prompt": "a"}, headers={"Origin": f"http://{own}"})
        assert same.status_code == 200
        other = http.post("/", json={"prompt": "b"}, headers={"Origin": f"https://{own}"})
        assert other.status_code == 403
    assert CALLS == ["a"]


# -- connections bounded before their headers are complete -------------------------------


def test_a_huge_header_gets_431_without_being_buffered(serve):
    server = serve(Target)
    _raw(server, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # warm
    gc.collect()
    before_rss, before_fds = _rss_mib(), _fds()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        sent, chunk = 0, b"a" * 65536
        try:  # the server answers at 64 KiB, drops the rest for a second, then closes
            while sent < 64 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass
        answer = _read_all(sock, 5)
    grew = _rss_mib() - before_rss
    assert _status_of(answer) == 431
    assert "headers over" in _body_of(answer)["detail"]
    assert grew < 16, f"RSS grew {grew:.1f} MiB"
    _still_serves(server)
    time.sleep(1.5)  # the refused connection lingers 1 s reading what is left
    assert _fds() <= before_fds + 1


def test_a_one_mib_header_is_refused_a_normal_one_is_not(serve):
    server = serve(Target)
    big = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n"
    assert _status_of(_raw(server, big)) == 431
    cookies = "; ".join(f"c{i}={'v' * 200}" for i in range(100))  # ~20 KB of cookies
    response = httpx.get(server.url + "/health", headers={"Cookie": cookies}, timeout=10)
    assert response.status_code == 200


def test_half_sent_and_silent_connections_are_closed(serve):
    limits = fal.ConnectionSpec(header_timeout=0.5, body_timeout=0.5)
    server = serve(Target, connections=limits)
    before = _fds()
    # half a request line, then nothing
    half = _raw(server, b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty", read_s=5)
    assert _status_of(half) == 408
    # a connection that never says anything
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        assert _status_of(_read_all(sock, 5)) == 408
    # headers complete, body stops half way: closed, and the handler never ran
    head = b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
    stalled = _raw(server, head + b'content-length: 100\r\n\r\n{"prompt": "', read_s=5)
    assert stalled == b""  # closed without an answer: nobody is left to read one
    assert CALLS == []
    _still_serves(server)
    time.sleep(1.5)
    assert _fds() <= before + 1


def test_a_slow_but_steady_body_is_not_cut(serve):
    server = serve(Target, connections=fal.ConnectionSpec(header_timeout=0.5, body_timeout=0.5))
    body = json.dumps({"prompt": "slow"}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n" % len(body)
        )
        for byte in body:  # each pause shorter than body_timeout, the whole longer
            sock.sendall(bytes([byte]))
            time.sleep(0.05)
        answer = sock.recv(65536)
    assert _status_of(answer) == 200 and _body_of(answer) == {"output": "slow"}


def test_connections_over_the_cap_get_503_not_a_failed_accept(serve):
    limits = fal.ConnectionSpec(max_connections=20, header_timeout=1.0)
    server = serve(Target, connections=limits)
    before_threads = _threads()
    idle = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(40)]
    try:
        refused = 0
        for sock in idle[20:]:
            answer = _read_all(sock, 2)
            if answer:
                assert _status_of(answer) == 503
                refused += 1
        assert refused >= 15
        # a real request while the cap is full: a clear 503, at once
        busy = httpx.get(server.url + "/health", timeout=5)
        assert busy.status_code == 503 and "open connections" in busy.json()["detail"]
    finally:
        for sock in idle:
            sock.close()
    time.sleep(1.5)  # the idle ones were dropped by their header timeout anyway
    _still_serves(server)
    # the realtime session's worker thread ends once the server has seen it close
    assert poller(5.0, interval=0.01)(lambda: _threads() <= before_threads + 1)


def test_a_thousand_idle_sockets_under_a_1024_fd_limit(tmp_path: Path):
    # The server in its own process with the usual 1,024 descriptor limit; the attacker
    # (this process) holds 1,100 idle sockets to it.
    script = tmp_path / "server.py"
    script.write_text(
        textwrap.dedent(
            """
            import resource, sys, time
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
            import falkit as fal

            class Tiny(fal.App):
                @fal.endpoint("/")
                def run(self) -> dict:
                    return {"ok": True}

            server = fal.serve(Tiny)
            print(server.port, flush=True)
            sys.stdin.read()  # until the test closes our stdin
            server.stop()
            """
        )
    )
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1300:
        pytest.skip(f"this process may hold only {soft} descriptors")
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    idle: list[socket.socket] = []
    try:
        assert proc.stdout is not None and proc.stdin is not None
        port = int(proc.stdout.readline())
        for _ in range(1100):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        busy = httpx.post(f"http://127.0.0.1:{port}/", json={}, timeout=10)
        assert busy.status_code == 503  # an answer, not a failed accept or a hang
        for sock in idle:
            sock.close()
        idle.clear()
        deadline = time.monotonic() + 10
        while True:
            ok = httpx.post(f"http://127.0.0.1:{port}/", json={}, timeout=10)
            if ok.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert ok.json() == {"ok": True}
    finally:
        for sock in idle:
            sock.close()
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(20)
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_websocket_handshake_with_a_9kb_path_gets_an_answer(serve):
    server = serve(Target)
    handshake = (
        b"GET /ws?" + b"q" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    assert _status_of(_raw(server, handshake)) == 414
    _still_serves(server)


# -- WebSocket messages bounded after decompression ----------------------------------------


def _masked_frame(payload: bytes, *, rsv1: bool = False, opcode: int = 2) -> bytes:
    first = 0x80 | (0x40 if rsv1 else 0) | opcode
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def _handshake(sock: socket.socket, path: str, extensions: str = "") -> bytes:
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"{extensions}\r\n".encode()
    )
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(4096)
    return answer


def test_permessage_deflate_is_declined_and_a_deflate_bomb_is_refused(serve):
    server = serve(Target)
    # 60 KiB that inflate to 60 MiB
    bomb_data = zlib.compressobj(9, zlib.DEFLATED, -15).compress(b"\x00" * (60 << 20))
    gc.collect()
    before = _rss_mib()
    for path in ("/ws", "/realtime"):
        for _ in range(2):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                offer = "Sec-WebSocket-Extensions: permessage-deflate\r\n"
                answer = _handshake(sock, path, offer)
                assert b" 101 " in answer.split(b"\r\n", 1)[0]
                assert b"sec-websocket-extensions" not in answer.lower()  # declined
                sock.sendall(_masked_frame(bomb_data, rsv1=True))  # compressed anyway
                reply = _read_all(sock, 5)
            assert reply[:1] == b"\x88"  # a close frame (protocol error), then the end
    grew = _rss_mib() - before
    assert grew < 32, f"RSS grew {grew:.1f} MiB"  # before: +118 MiB for one bomb
    assert not any(c.startswith("ws:") for c in CALLS)
    _still_serves(server)


def test_a_raw_websocket_never_receives_a_message_over_ws_max_size(serve):
    server = serve(Target, ws_max_size=64 * 1024)
    with server.client.websocket("/ws") as ws:
        ws.send(b"x" * 1000)
        assert ws.recv(10) == b"got 1000"
    # over ws_max_size, under what uvicorn took before (4x): delivered whole, before
    with pytest.raises(ConnectionClosed) as closed, server.client.websocket("/ws") as ws:
        ws.send(b"x" * (200 * 1024))
        ws.recv(10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert f"ws:{200 * 1024}" not in CALLS
    _still_serves(server)


# -- bad bodies are 4xx with fal's shape, bounded ----------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/octet-stream",
        "text/plain",
        "image/png",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        None,
    ],
)
def test_a_body_that_is_not_utf8_is_a_422_not_a_500(serve, content_type):
    server = serve(Target)
    headers = {"content-type": content_type} if content_type else {}
    response = httpx.post(
        server.url + "/", content=b"\xff\xfe\x80 not utf-8 \xc3\x28", headers=headers, timeout=10
    )
    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list)
    assert "Traceback" not in server.logs()
    _still_serves(server)


def test_a_422_quotes_a_bounded_prefix_of_a_huge_body(serve):
    server = serve(Target)
    gc.collect()
    before = _rss_mib()
    body = bytes(range(1, 32)) * (10 * 1024 * 1024 // 31)  # 10 MB of control bytes
    response = httpx.post(
        server.url + "/", content=body, headers={"content-type": "text/plain"}, timeout=30
    )
    grew = _rss_mib() - before
    assert response.status_code == 422
    assert len(response.content) < 16 * 1024  # before: 60 MB
    (error,) = response.json()["detail"]
    assert "cut:" in error["input"] and len(error["input"]) < 1200
    assert grew < 80, f"RSS grew {grew:.1f} MiB"
    # many errors: at most 100 named, then a count of the rest
    many = httpx.post(server.url + "/", json=[1] * 50_000, timeout=30)
    assert many.status_code == 422 and len(many.content) < 64 * 1024
    _still_serves(server)


# -- the queue keeps results by size ------------------------------------------------------


def test_queued_results_are_kept_by_size(serve):
    server = serve(Target)
    base = f"{server.url}/.fal/queue/local/{server.app_name}"
    ids = []
    with httpx.Client(timeout=30) as http:
        for _ in range(30):  # 30 results of 4 MiB
            submitted = http.post(base + "/big", json={"prompt": "x"}).json()
            deadline = time.monotonic() + 20
            while http.get(submitted["status_url"]).json()["status"] != "COMPLETED":
                assert time.monotonic() < deadline
                time.sleep(0.01)
            ids.append(submitted)
        kept = [http.get(s["response_url"]).status_code for s in ids]
    assert kept[-1] == 200 and kept[0] == 404  # the oldest let go, the newest kept
    assert 1 <= kept.count(200) <= gateway.MAX_KEPT_BYTES // (4 * 1024 * 1024)
    _still_serves(server)


# -- the key never lands in a notebook ----------------------------------------------------


def test_the_key_is_never_printed(serve, capfd):
    server = serve(Target, host="0.0.0.0")
    err = capfd.readouterr().err
    key = server.api_key
    assert key is not None
    assert key not in err and key[:4] in err and "api_key" in err
    assert key not in repr(server.security) and key not in server.logs()


def test_the_key_is_not_in_a_saved_notebook(tmp_path: Path):
    key_file = tmp_path / "key.txt"
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import falkit as fal\n\n"
            "class Keyed(fal.App):\n"
            "    @fal.endpoint('/')\n"
            "    def run(self) -> dict:\n"
            "        return {}\n"
        ),
        nbformat.v4.new_code_cell("%fal serve Keyed --host 0.0.0.0"),
        nbformat.v4.new_code_cell(
            f"open({str(key_file)!r}, 'w').write(fal.get_server('Keyed').api_key)\n"
            "fal.get_server('Keyed')"
        ),
        nbformat.v4.new_code_cell("%fal stop --all"),
    ]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    saved = nbformat.writes(nb)
    key = key_file.read_text()
    assert len(key) > 20 and key not in saved
    assert "api_key" in saved  # the serve cell says where to read it


# -- DNS rebinding in a real browser ------------------------------------------------------

EVIL_PAGE = """<!doctype html><title>evil</title><script>
async function attack() {
  const out = {};
  for (const [name, init] of [["openapi", {}], ["docs", {}],
      ["post", {method: "POST", headers: {"content-type": "application/json"},
                body: JSON.stringify({prompt: "pwned"})}]]) {
    const path = name === "openapi" ? "/openapi.json" : name === "docs" ? "/docs" : "/";
    try { const r = await fetch(path, init); out[name] = [r.status, await r.text()]; }
    catch (e) { out[name] = [0, String(e)]; }
  }
  for (const path of ["/ws", "/realtime"]) {
    out[path] = await new Promise((done) => {
      const ws = new WebSocket(`ws://${location.host}${path}`);
      ws.onopen = () => { ws.close(); done("open"); };
      ws.onerror = () => done("refused");
      setTimeout(() => done("timeout"), 5000);
    });
  }
  return out;
}
</script>"""


def test_a_rebound_page_in_chromium_can_neither_fetch_nor_open_websockets(serve):
    from test_browser import CHROMIUM, CHROMIUM_ARGS, _require_browser

    _require_browser()
    from playwright.sync_api import sync_playwright

    server = serve(Target)
    evil = f"http://attacker.test:{server.port}"
    # attacker.test resolves to 127.0.0.1, as the attacker's DNS answers once rebound.
    # Chromium's own Private Network Access checks are turned off: Firefox and Safari have
    # none, and Chromium's enforcement for plain-http pages has changed from release to
    # release; the server must refuse the page by itself.
    args = [
        *CHROMIUM_ARGS,
        "--host-resolver-rules=MAP attacker.test 127.0.0.1",
        "--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests,"
        "PrivateNetworkAccessRespectPreflightResults,PrivateNetworkAccessSendPreflights",
    ]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page()
            # The page itself comes from the attacker's server before the rebinding: the
            # test serves it to the browser directly; every request it makes afterwards
            # goes to 127.0.0.1:PORT, with Host attacker.test:PORT.
            page.route(
                f"{evil}/evil.html",
                lambda route: route.fulfill(body=EVIL_PAGE, content_type="text/html"),
            )
            page.goto(f"{evil}/evil.html")
            out = page.evaluate("attack()")
        finally:
            browser.close()
    for name in ("openapi", "docs", "post"):
        status, text = out[name]
        assert status == 403, (name, status, text[:200])
        assert "attacker.test" in json.loads(text)["detail"]
    assert out["/ws"] == "refused" and out["/realtime"] == "refused"
    assert CALLS == []  # no handler ran
    _still_serves(server)
