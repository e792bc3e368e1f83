"""The processor's TCP server: newline-delimited JSON in, processed messages out.

Each connection reads in large chunks, splits them into lines
(:class:`~squall.lines.LineReader`) and starts one task per ``process``
request, so requests are pipelined and answered in whatever order they finish,
matched by ``ref``. A connection stops reading while ``max_in_flight`` of its
requests are unfinished, which pushes back on the web node through TCP.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpserver import TCPServer

from ..errors import Rejected
from ..lines import PROTOCOL_VERSION, LineReader, encode_line
from ..message import Draft
from .pipeline import Pipeline

__all__ = ["ProcessorServer"]

log = logging.getLogger("squall.processor")

_READ_CHUNK = 256 * 1024
_PROCESS_FIELDS = {"room": str, "nick": str, "id": str, "body": str, "ts": int}


class ProcessorServer(TCPServer):
    def __init__(
        self,
        pipeline: Pipeline | None = None,
        *,
        on_seen: Callable[[str, str, int], None] | None = None,
        max_line: int = 64 * 1024,
        max_in_flight: int = 4096,
        max_write_buffer: int = 64 * 1024 * 1024,
    ) -> None:
        super().__init__(max_buffer_size=max(4 * max_line, 2 * _READ_CHUNK))
        self.pipeline = pipeline
        self.on_seen = on_seen
        self.max_line = max_line
        self.max_in_flight = max_in_flight
        self.max_write_buffer = max_write_buffer
        self.connections: set[_Connection] = set()
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is in flight; False if ``timeout`` s passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def handle_stream(self, stream: IOStream, address: Any) -> None:
        stream.max_write_buffer_size = self.max_write_buffer
        try:
            stream.set_nodelay(True)
        except OSError:
            pass
        connection = _Connection(self, stream)
        self.connections.add(connection)
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)

    def send_to_all(self, value: dict[str, Any]) -> None:
        """Send an unasked line (``updated``) to every connected web node."""
        line = encode_line(value)
        for connection in self.connections:
            connection.write(line)


class _Connection:
    __slots__ = ("server", "stream", "reader", "greeted", "in_flight", "_resume")

    def __init__(self, server: ProcessorServer, stream: IOStream) -> None:
        self.server = server
        self.stream = stream
        self.reader = LineReader(max_line=server.max_line)
        self.greeted = False
        self.in_flight = 0
        self._resume: asyncio.Event | None = None

    def write(self, line: bytes) -> None:
        if not self.stream.closed():
            try:
                self.stream.write(line)
            except StreamClosedError:
                pass

    def send(self, value: dict[str, Any]) -> None:
        self.write(encode_line(value))

    async def run(self) -> None:
        self.send({"op": "hello", "role": "processor", "version": PROTOCOL_VERSION})
        try:
            while True:
                if self.in_flight >= self.server.max_in_flight:
                    self._resume = asyncio.Event()
                    await self._resume.wait()
                data = await self.stream.read_bytes(_READ_CHUNK, partial=True)
                for line in self.reader.receive_data(data):
                    if line.value is None:
                        self.send({"op": "error", "code": "bad_json", "reason": line.error})
                    else:
                        self.handle(line.value)
                if self.reader.overflow is not None:
                    reason = str(self.reader.overflow)
                    self.send({"op": "error", "code": "line_too_long", "reason": reason})
                    self.stream.close()
                    return
        except StreamClosedError:
            pass

    def handle(self, request: dict[str, Any]) -> None:
        op = request.get("op")
        if op == "hello":
            version = request.get("version")
            if version != PROTOCOL_VERSION:
                self.send({
                    "op": "error", "code": "bad_version",
                    "reason": f"this processor speaks version {PROTOCOL_VERSION}, not {version!r}",
                })
                self.stream.close()
                return
            self.greeted = True
        elif op == "ping":
            self.send({"op": "pong"})
        elif not self.greeted:
            self.send({
                "op": "error", "code": "hello_expected",
                "reason": f'send {{"op":"hello","version":{PROTOCOL_VERSION}}} first',
            })
        elif op == "seen":
            nick, room, seq = request.get("nick"), request.get("room"), request.get("seq")
            if isinstance(nick, str) and isinstance(room, str) and isinstance(seq, int):
                if self.server.on_seen is not None:
                    self.server.on_seen(nick, room, seq)
            else:
                self.send({"op": "error", "code": "bad_field",
                           "reason": "seen needs 'nick' and 'room' strings and an integer 'seq'"})
        elif op == "process":
            draft = self._parse_process(request)
            if draft is not None:
                self.in_flight += 1
                self.server.in_flight += 1
                self.server._idle.clear()
                asyncio.ensure_future(self._process(request["ref"], draft))
        else:
            self.send({
                "op": "error", "code": "unknown_op",
                "reason": f"unknown op {op!r}; known ops are hello, ping, process, seen",
                **({"ref": request["ref"]} if "ref" in request else {}),
            })

    def _parse_process(self, request: dict[str, Any]) -> Draft | None:
        problems = []
        if "ref" not in request:
            problems.append("'ref' is missing")
        for name, kind in _PROCESS_FIELDS.items():
            value = request.get(name)
            if not isinstance(value, kind) or isinstance(value, bool):
                problems.append(f"{name!r} must be {'a string' if kind is str else 'an integer'}")
        if problems:
            answer: dict[str, Any] = {"op": "error", "code": "bad_field", "reason": "; ".join(problems)}
            if "ref" in request:
                answer["ref"] = request["ref"]
            self.send(answer)
            return None
        return Draft(
            room=request["room"], nick=request["nick"], id=request["id"],
            body=request["body"], ts=request["ts"],
        )

    async def _process(self, ref: Any, draft: Draft) -> None:
        pipeline = self.server.pipeline
        assert pipeline is not None, "ProcessorServer.pipeline must be set before listening"
        try:
            message = await pipeline.run(draft)
        except Rejected as exc:
            self.send({"op": "rejected", "ref": ref, "code": exc.code, "reason": exc.reason})
        else:
            answer = {"op": "processed", "ref": ref, "message": message.to_wire()}
            if message.duplicate:
                answer["duplicate"] = True
            self.send(answer)
        finally:
            self.in_flight -= 1
            self.server.in_flight -= 1
            if not self.server.in_flight:
                self.server._idle.set()
            if self._resume is not None and self.in_flight < self.server.max_in_flight:
                self._resume.set()
                self._resume = None
