"""The web node's side of the processor link, for the load generator and the ceilings.

Theory of operation: :class:`ProcessorClient` is a bare ``asyncio.Protocol``
that speaks Squall's processor protocol (docs/protocol.md §6) as a web node
does: it proves the key derived from :data:`~bench.serving.BENCH_SECRET`,
checks the processor's proof, then pipelines ``process`` requests and hands
back every answer that arrived in one read *together*, so that a caller can
treat the messages of one group commit as one batch (the coalescing ceiling
does; the plain ceiling takes them one by one).

:func:`spawn_processor` starts the processor ceiling as a child process, as
``squall run`` starts Squall's processor: the harness measures a server's
whole process tree, so the child's CPU counts with its parent's.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import orjson

from squall.errors import HandshakeFailed
from squall.handshake import check_welcome, link_key, new_nonce, web_hello

from .serving import BENCH_SECRET, set_nodelay

__all__ = [
    "MAX_ANSWER_BYTES",
    "ChildProcessor",
    "ProcessorClient",
    "connect_processor",
    "process_request",
    "spawn_processor",
]

MAX_ANSWER_BYTES = 64 * 2**20  # bytes of an unfinished answer line before the link is dropped
START_TIMEOUT_S = 10.0  # seconds for a child processor to listen, and to answer hello


def process_request(ref: int, room: str, nick: str, cid: str, body: str, ts: int) -> bytes:
    """Return one encoded ``process`` line; join several to send them in one write."""
    op = {"op": "process", "ref": ref, "room": room, "nick": nick, "id": cid, "body": body, "ts": ts}
    return orjson.dumps(op) + b"\n"


class ProcessorClient(asyncio.Protocol):
    """A pipelined client of the processor's newline-delimited JSON protocol.

    Await :attr:`ready` (the authenticated ``hello`` exchange), then call
    :meth:`process` or :meth:`write`; every read's answers are passed, in
    order, to ``on_answers(answers, arrival time)``. ``on_lost`` is called if
    the processor hangs up after :attr:`ready`.
    """

    def __init__(
        self,
        on_answers: Callable[[list[dict[str, Any]], float], None],
        *,
        on_lost: Callable[[Exception | None], None] | None = None,
    ) -> None:
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.on_answers = on_answers
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self._buffer = b""
        self._key = link_key(BENCH_SECRET)
        self._nonces: tuple[str, str] | None = None  # (ours, theirs) once we said hello

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        set_nodelay(transport)

    def _handshake(self, line: dict[str, Any]) -> None:
        assert self.transport is not None
        try:
            if self._nonces is None:
                ours = new_nonce()
                hello, theirs = web_hello(line, key=self._key, our_nonce=ours)
                self._nonces = (ours, theirs)
                self.transport.write(orjson.dumps(hello) + b"\n")
            else:
                ours, theirs = self._nonces
                check_welcome(line, key=self._key, their_nonce=theirs, our_nonce=ours)
                self.ready.set_result(None)
        except HandshakeFailed as exc:
            self.ready.set_exception(ConnectionError(f"processor handshake failed: {exc}"))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("processor closed before hello"))
            self.ready.exception()
        elif self.on_lost is not None:
            self.on_lost(exc)

    def process(self, ref: int, room: str, nick: str, cid: str, body: str) -> None:
        """Send one ``process`` request, stamped with the wall clock as a web node does."""
        self.write(process_request(ref, room, nick, cid, body, int(time.time() * 1000)))

    def write(self, lines: bytes) -> None:
        """Send encoded request lines (:func:`process_request`) as they are."""
        assert self.transport is not None
        self.transport.write(lines)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        buf = self._buffer + data if self._buffer else data
        lines = buf.split(b"\n")
        self._buffer = lines.pop()
        answers = []
        for line in lines:
            if not line:
                continue
            answer = orjson.loads(line)
            if not self.ready.done():
                self._handshake(answer)
                continue
            answers.append(answer)
        if answers:
            self.on_answers(answers, now)
        if len(self._buffer) > MAX_ANSWER_BYTES:
            self.close()


async def connect_processor(
    host: str,
    port: int,
    on_answers: Callable[[list[dict[str, Any]], float], None],
    *,
    on_lost: Callable[[Exception | None], None] | None = None,
) -> ProcessorClient:
    """Connect to a processor at ``host``:``port`` and return the client once the handshake is done."""
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: ProcessorClient(on_answers, on_lost=on_lost), host, port)
    await asyncio.wait_for(client.ready, START_TIMEOUT_S)
    return client


async def spawn_processor(
    loop_name: str, data_dir: str | None, *, synchronous: str = "FULL"
) -> tuple[asyncio.subprocess.Process, int]:
    """Start :mod:`bench.ceiling_processor` as a child; return it and the port it listens on.

    The child inherits this process's CPU affinity, so a pinned ceiling and its
    processor share the server core, as Squall's web node and processor do.
    Terminate the process when done.
    """
    argv = [sys.executable, "-m", "bench.ceiling_processor", "--port", "0", "--loop", loop_name,
            "--synchronous", synchronous]
    if data_dir is not None:
        argv += ["--data-dir", data_dir]
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, cwd=Path(__file__).resolve().parent.parent
    )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT_S)
    except TimeoutError:
        line = b""
    if not line.startswith(b"listening "):
        process.kill()
        await process.wait()
        raise RuntimeError(f"bench.ceiling_processor did not start (said {line!r})")
    return process, int(line.split()[1])


class ChildProcessor:
    """A ceiling's processor: the child process and the link to it, started and closed together.

    If the link drops, the ceiling stops (SIGTERM to itself, which
    :func:`~bench.serving.serve_main` handles): a web node without its
    processor cannot store, and the bench must see the failure.
    """

    def __init__(self, who: str, child: asyncio.subprocess.Process, link: ProcessorClient) -> None:
        self._who = who
        self._child = child
        self.link = link
        link.on_lost = self._lost

    @classmethod
    async def start(
        cls, who: str, loop_name: str, data_dir: str | None,
        on_answers: Callable[[list[dict[str, Any]], float], None],
    ) -> ChildProcessor:
        child, port = await spawn_processor(loop_name, data_dir)
        try:
            link = await connect_processor("127.0.0.1", port, on_answers)
        except BaseException:
            child.kill()
            raise
        return cls(who, child, link)

    def _lost(self, exc: Exception | None) -> None:
        print(f"{self._who}: the processor closed the link ({exc}); stopping", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)

    def close(self) -> None:
        self.link.on_lost = None
        self.link.close()
        if self._child.returncode is None:
            self._child.terminate()
