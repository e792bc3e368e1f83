"""A gzip bomb behind a link costs the processor about ``preview_max_bytes`` (issue 10, defect 9).

A local HTTP server answers with 256 MiB of HTML that gzip shrinks to about
250 KiB. Tornado before 6.5.6 bounded only the compressed bytes and inflated
the rest: the processor grew by hundreds of MiB (638 MiB for a 298 KiB
response on 6.4.2). Now the body is counted after decompression and the fetch
stops one chunk past ``preview_max_bytes``: the processor's peak RSS (VmHWM)
grows by a few MiB and the preview is skipped, while a later, normal link still
gets its preview.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import TIMEOUT, LineClient, SquallProcess, free_port, run_async, squall_server

INFLATED = 256 * 1024 * 1024
PAGE = b"<html><head><title>After the bomb</title></head><body></body></html>"
# Peak RSS the fetch may add: the 1 MiB limit, one decompressed chunk past it,
# the compressed body in buffers, and allocator slack. Before the fix: > 256 MiB.
MAX_GROWTH = 48 * 1024 * 1024


def gzip_bomb(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip container
    block = b" " * (1024 * 1024)
    parts = [compressor.compress(b"<html><head><title>boom</title>")]
    parts += [compressor.compress(block) for _ in range(size // len(block))]
    parts.append(compressor.flush())
    return b"".join(parts)


def peak_rss(pid: int) -> int:
    """The process's peak resident set size in bytes (VmHWM, Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


class BombSite:
    """Serves ``/bomb`` (the gzip bomb) and ``/page``; ``closed`` fires when a bomb
    fetch's connection is closed by the client."""

    def __init__(self, port: int, bomb: bytes) -> None:
        self.port = port
        self.bomb = bomb
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ")[1]
        if path == b"/bomb":
            headers = b"Content-Type: text/html\r\nContent-Encoding: gzip\r\n"
            body = self.bomb
        else:
            headers, body = b"Content-Type: text/html\r\n", PAGE
        writer.write(b"HTTP/1.1 200 OK\r\n" + headers + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        try:
            await writer.drain()
            await reader.read()  # until the fetcher hangs up
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            if path == b"/bomb" and not self.closed.done():
                self.closed.set_result(None)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return gzip_bomb(INFLATED)


@pytest.fixture
def site_port() -> int:
    return free_port()


@pytest.fixture
def processor(tmp_path: Path, site_port: int) -> Iterator[SquallProcess]:
    env = {"SQUALL_PREVIEW_ALLOW": f"127.0.0.1:{site_port}"}
    with squall_server(tmp_path, "processor", env=env) as instance:
        yield instance


async def until(client: LineClient, accept: Any) -> dict[str, Any]:
    while True:
        line = await client.recv()
        if accept(line):
            return line


def test_gzip_bomb_preview_is_skipped_and_memory_stays_bounded(
    processor: SquallProcess, site_port: int, bomb: bytes
) -> None:
    assert len(bomb) < 512 * 1024 < INFLATED
    assert processor.process is not None
    pid = processor.process.pid

    async def scenario() -> None:
        site = BombSite(site_port, bomb)
        server = await asyncio.start_server(site.handle, "127.0.0.1", site_port)
        client = await LineClient.connect(processor.processor_port)
        try:
            await client.authenticate(processor.link_key())
            before = peak_rss(pid)
            client.send({"op": "process", "ref": "bomb", "room": "bombs", "nick": "mallory", "id": "b1",
                         "body": f"look http://127.0.0.1:{site_port}/bomb", "ts": 1_700_000_000_000})
            stored = await until(client, lambda line: line.get("ref") == "bomb")
            assert stored["op"] == "processed", stored
            await asyncio.wait_for(site.closed, TIMEOUT)
            growth = peak_rss(pid) - before
            assert growth < MAX_GROWTH, f"peak RSS grew by {growth / 2**20:.0f} MiB"

            # The barrier: a later link's preview arrives; the bomb's never did.
            client.send({"op": "process", "ref": "page", "room": "bombs", "nick": "alice", "id": "p1",
                         "body": f"see http://127.0.0.1:{site_port}/page", "ts": 1_700_000_000_001})
            update = await until(client, lambda line: line.get("op") == "updated")
            assert update["seq"] == 2 and update["links"][0]["title"] == "After the bomb", update
        finally:
            await client.close()
            server.close()

    run_async(scenario())
