"""Peak RSS of a served App under three attacks, each in a fresh server process (so the
figure is the server's own, not the attacker's): a 64 MiB request header, two
permessage-deflate bombs (60 KiB that inflate to 60 MiB) on four connections, and a 10 MB
text/plain body of control bytes (the 422 that quotes it). Also the answer's status and
size. Run it against another tree with ``PYTHONPATH=/that/tree`` to compare.

    python benchmarks/attacks.py
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
import zlib

SERVER = """
import sys
import falkit as fal
from fastapi import WebSocket
from pydantic import BaseModel

class Input(BaseModel):
    prompt: str

class Target(fal.App):
    @fal.endpoint("/")
    def run(self, input: Input) -> dict:
        return {}

    @fal.endpoint("/ws", is_websocket=True)
    async def ws(self, websocket: WebSocket) -> None:
        await websocket.accept()
        async for message in websocket.iter_bytes():
            await websocket.send_bytes(b"%d" % len(message))

server = fal.serve(Target)
print(server.port, flush=True)
for line in sys.stdin:
    status = open("/proc/self/status").read().split("\\n")
    print(json.dumps({l.split(":")[0]: l.split()[1] for l in status if l.startswith("Vm")}),
          flush=True)
server.stop()
""".replace("import sys", "import json, sys", 1)


def _memory(proc: subprocess.Popen) -> dict[str, int]:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    return {k: int(v) // 1024 for k, v in json.loads(proc.stdout.readline()).items()}


def _read(sock: socket.socket, seconds: float = 5.0) -> bytes:
    sock.settimeout(seconds)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except OSError:
        pass
    return out


def header(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        try:
            for _ in range(1024):  # 64 MiB
                sock.sendall(b"a" * 65536)
            sock.sendall(b"\r\n\r\n")
        except OSError:
            pass
        answer = _read(sock)
    return answer.split(b"\r\n", 1)[0].decode() or "(no answer)"


def _frame(payload: bytes) -> bytes:
    mask = os.urandom(4)
    head = struct.pack("!BBQ", 0x80 | 0x40 | 2, 0x80 | 127, len(payload))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def bomb(port: int) -> str:
    data = zlib.compressobj(9, zlib.DEFLATED, -15).compress(b"\x00" * (60 << 20))
    data += zlib.compressobj(9, zlib.DEFLATED, -15).flush(zlib.Z_SYNC_FLUSH)[:0]
    outcomes = []
    for _ in range(4):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(
                b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
            )
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += sock.recv(4096)
            negotiated = b"permessage-deflate" in answer.lower()
            try:
                for _ in range(2):
                    sock.sendall(_frame(data))
            except OSError:
                pass
            reply = _read(sock, 3)
            outcomes.append(f"deflate {'on' if negotiated else 'off'}, {len(reply)} B back")
    return outcomes[0]


def amplification(port: int) -> str:
    body = bytes(range(1, 32)) * (10 * 1024 * 1024 // 31)
    head = (
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: text/plain\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
    )
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(head + body)
        answer = _read(sock, 30)
    status = answer.split(b"\r\n", 1)[0].decode()
    return f"{status}, {len(answer) / 1e6:.2f} MB answer"


def main() -> None:
    print(f"python {sys.version.split()[0]}, falkit from {os.environ.get('PYTHONPATH', 'here')}")
    for attack in (header, bomb, amplification):
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdin is not None
        port = int(proc.stdout.readline())
        time.sleep(0.2)
        before = _memory(proc)
        outcome = attack(port)
        after = _memory(proc)
        proc.stdin.close()
        proc.wait(30)
        proc.stdout.close()
        peak = after["VmHWM"] - before["VmRSS"]
        kept = after["VmRSS"] - before["VmRSS"]
        print(f"{attack.__name__:>14}: peak +{peak} MiB, kept +{kept} MiB; {outcome}")


if __name__ == "__main__":
    main()
