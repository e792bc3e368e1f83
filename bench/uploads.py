"""Uploads beside chat: does a 50 MiB upload move other clients' latency?

One ``squall run`` (its upload limit raised to fit). A *pinger* on WebSocket
sends a message every :data:`PING_INTERVAL` seconds and times send → its own
echo (the stored message coming back from the room). First alone for the
scenario's duration (``alone``), then while an *uploader* on another
connection streams :data:`UPLOAD_BYTES` (50 MiB, random, so a download kind)
to ``POST /api/files``, then a 12 Mpx photo that the web node re-encodes in its
worker processes, then stays quiet as long, and again, for twice the
scenario's duration. Each ping counts as ``during`` if an upload was streaming
when it was sent, else ``alone``: the two sets are interleaved in time, so the
machine's other work hurts both alike. The headline is the p99 during uploads;
the goal compares it with alone's. With ``--clients`` (the smoke test) the
upload is 2 MiB and the photo small.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from .cross_node import START_TIMEOUT, STOP_TIMEOUT
from .targets import SQUALL_BENCH_ENV, Target, _pinned, free_port, stop_process

__all__ = ["upload_latency", "UPLOAD_BYTES"]

UPLOAD_BYTES = 50 * 1024 * 1024
SMALL_UPLOAD_BYTES = 2 * 1024 * 1024  # with --clients (the smoke test)
PING_INTERVAL = 0.02
WRITE_SIZE = 256 * 1024
ECHO_TIMEOUT = 10.0


def _percentiles(values: list[float], prefix: str) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

    return {f"{prefix}p50_ms": at(0.5), f"{prefix}p99_ms": at(0.99), f"{prefix}max_ms": round(ordered[-1] * 1000, 3),
            f"{prefix}pings": len(values)}


async def _session(port: int, nick: str) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps({"nick": nick}).encode()
    writer.write(b"POST /api/session HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    data = await reader.read()
    writer.close()
    return str(json.loads(data.partition(b"\r\n\r\n")[2])["token"])


def _upload(port: int, token: str, data: bytes, name: str, *, prefix: bytes = b"") -> tuple[int, float]:
    """Stream ``prefix`` and ``data`` to POST /api/files from a blocking socket
    (run in a thread, so the pinger's loop in this process is not the one busy
    writing 50 MiB); (status, seconds)."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall((f"POST /api/files?name={name} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                      f"Authorization: Bearer {token}\r\nContent-Length: {len(prefix) + len(data)}\r\n\r\n"
                      ).encode() + prefix)
        view = memoryview(data)
        for start in range(0, len(data), WRITE_SIZE):
            sock.sendall(view[start:start + WRITE_SIZE])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, time.perf_counter() - started


def _photo(pixels: tuple[int, int]) -> bytes:
    """A noisy JPEG (noise does not compress away): real decode and encode work."""
    from PIL import Image

    image = Image.frombytes("RGB", pixels, random.randbytes(pixels[0] * pixels[1] * 3))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=95)
    return out.getvalue()


class _Pinger:
    """Send → own echo, one at a time; each latency filed under whether an
    upload was streaming when the ping was sent (:attr:`busy`, set by the uploader)."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self.busy = False
        self.alone: list[float] = []
        self.during: list[float] = []
        self.pong_alone: list[float] = []
        self.pong_during: list[float] = []
        self.lost = 0

    async def run(self, room: str, done: asyncio.Future[Any] | None = None, *, until: float = 0.0) -> None:
        """Ping until ``done`` (or the ``until`` clock reading, without it)."""
        async with connect(f"ws://127.0.0.1:{self.port}/ws?token={self.token}", compression=None) as ws:
            await ws.send(json.dumps({"type": "join", "room": room}))
            while json.loads(await ws.recv()).get("type") != "joined":
                pass
            n = 0
            while not done.done() if done is not None else time.perf_counter() < until:
                n += 1
                cid = f"p{n}"
                busy = self.busy
                sent = time.perf_counter()
                await ws.send(json.dumps({"type": "send", "room": room, "id": cid, "body": f"ping {n}"}))
                try:
                    async with asyncio.timeout(ECHO_TIMEOUT):
                        while True:
                            frame = json.loads(await ws.recv())
                            if frame.get("type") == "message" and frame.get("id") == cid:
                                break
                except TimeoutError:
                    self.lost += 1
                    continue
                (self.during if busy else self.alone).append(time.perf_counter() - sent)
                # And the web node alone: a ping its loop answers itself, no processor, no store.
                busy = self.busy
                sent = time.perf_counter()
                await ws.send('{"type":"ping"}')
                while json.loads(await ws.recv()).get("type") != "pong":
                    pass
                (self.pong_during if busy else self.pong_alone).append(time.perf_counter() - sent)
                await asyncio.sleep(PING_INTERVAL)


async def upload_latency(target: Target, options: Any) -> dict[str, Any]:
    command = target._command()  # type: ignore[attr-defined]
    size = SMALL_UPLOAD_BYTES if options.clients else UPLOAD_BYTES
    workdir = tempfile.TemporaryDirectory(prefix="bench-uploads-")
    data_dir = Path(workdir.name) / "data"
    data_dir.mkdir()
    port = free_port()
    env = {**os.environ, **SQUALL_BENCH_ENV, "SQUALL_UPLOAD_MAX_BYTES": str(size + 1024),
           "SQUALL_UPLOAD_QUOTA_BYTES": str(1 << 40), "SQUALL_UPLOAD_BURST": "1000", "SQUALL_UPLOAD_RATE": "100"}
    argv = [command, "run", "--port", str(port), "--processor-port", str(free_port()), "--data-dir", str(data_dir),
            "--loop", target.loop]  # type: ignore[attr-defined]
    with open(Path(workdir.name) / "squall.log", "wb") as log:
        process = await asyncio.create_subprocess_exec(
            *_pinned(argv, target.pin), stdout=log, stderr=subprocess.STDOUT, env=env,  # type: ignore[attr-defined]
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                if time.monotonic() > deadline or process.returncode is not None:
                    raise RuntimeError("squall did not start for the uploads scenario") from None
                await asyncio.sleep(0.05)
        pinger_token, uploader_token = await _session(port, "pinger"), await _session(port, "uploader")
        # Warm-up: the processor link, the first store write.
        await _Pinger(port, pinger_token).run("warm", until=time.perf_counter() + 0.3)
        blob = random.randbytes(size)
        photo = _photo((800, 600) if options.clients else (4000, 3000))
        pinger = _Pinger(port, pinger_token)
        uploads: list[tuple[str, int, float]] = []
        end = time.perf_counter() + 2 * options.duration

        def uploader() -> None:
            # Uploading and quiet in turn, as long each, so that the two sets of
            # pings share whatever else the machine does meanwhile.
            n = 0
            while time.perf_counter() < end or n == 0:
                n += 1
                pinger.busy = True
                started = time.perf_counter()
                # A different file each time (its first 8 bytes): each is stored anew.
                uploads.append(("blob", *_upload(port, uploader_token, blob, f"blob{n}.bin",
                                                  prefix=n.to_bytes(8, "big"))))
                uploads.append(("photo", *_upload(port, uploader_token, photo, f"photo{n}.jpg")))
                pinger.busy = False
                time.sleep(time.perf_counter() - started)

        thread = asyncio.ensure_future(asyncio.to_thread(uploader))
        await pinger.run("pings", thread)
        await thread
        blobs = [u for u in uploads if u[0] == "blob"]
        photos = [u for u in uploads if u[0] == "photo"]
        result: dict[str, Any] = {
            "upload_bytes": size, "photo_bytes": len(photo), "uploads": len(blobs), "photos": len(photos),
            "upload_mib_per_s": round(size / (1 << 20) / (sum(u[2] for u in blobs) / len(blobs)), 1),
            "photo_s": round(sum(u[2] for u in photos) / len(photos), 3),
            **_percentiles(pinger.alone, "alone_"), **_percentiles(pinger.during, ""),
            **_percentiles(pinger.pong_alone, "pong_alone_"), **_percentiles(pinger.pong_during, "pong_"),
            "lost": pinger.lost,
        }
        result["ok"] = (all(status == 201 for _kind, status, _s in uploads) and result["lost"] == 0
                        and bool(pinger.alone) and bool(pinger.during))
        result["vs_alone"] = round(result["p99_ms"] / max(result["alone_p99_ms"], 0.001), 2)
        result["setup_s"] = 0.0
        return result
    finally:
        await stop_process(process, STOP_TIMEOUT)
        workdir.cleanup()
