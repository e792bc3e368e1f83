"""The processor ceiling: Squall's processor protocol in front of bare ``sqlite3``.

Theory of operation: a ``process`` request gets the next ``seq`` of its room,
its body HTML-escaped, and a row in SQLite; the answer goes out once the row is
committed. Everything that arrived in one read is one transaction (group
commit), the cheapest way to make a pipelined client's messages durable.
SQLite runs in WAL mode with ``synchronous=FULL`` by default, as Squall's store
does: a commit is fsync'd, so an acknowledged message survives a power cut, and
the ceiling pays for "acked = stored" what Squall pays. ``--synchronous NORMAL``
(durable against a process crash only) shows what the fsync costs.

It blocks the event loop while it commits, which Squall's web node must never
do; the processor is a separate process precisely so that this is allowed.
There is no link preview, no mention parsing, no keyword filter.

Run it alone with ``python -m bench.ceiling_processor --port 8004``.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import os
import sqlite3
import tempfile

from typing import cast

import orjson

from squall.errors import HandshakeFailed
from squall.handshake import check_web_hello, link_key, new_nonce, processor_hello, welcome

from .serving import BACKLOG, BENCH_SECRET, announce, serve_main, set_nodelay

__all__ = ["start"]

MAX_LINE = 65536  # bytes of one request line
_KEY = link_key(BENCH_SECRET)
SYNCHRONOUS = {"FULL": "FULL", "NORMAL": "NORMAL"}  # the only values --synchronous takes into the PRAGMA

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    room TEXT NOT NULL, seq INTEGER NOT NULL, nick TEXT NOT NULL, cid TEXT NOT NULL,
    body TEXT NOT NULL, html TEXT NOT NULL, ts INTEGER NOT NULL,
    PRIMARY KEY (room, seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS messages_cid ON messages (room, nick, cid);
"""


class _Store:
    def __init__(self, path: str, synchronous: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={SYNCHRONOUS[synchronous]}")
        self.db.executescript(_SCHEMA)
        self.seqs: dict[str, int] = dict(self.db.execute("SELECT room, MAX(seq) FROM messages GROUP BY room"))

    def store(self, requests: list[dict[str, object]]) -> list[bytes]:
        answers = []
        self.db.execute("BEGIN")
        for req in requests:
            room, nick, cid, body = str(req["room"]), str(req["nick"]), str(req["id"]), str(req["body"])
            seq = self.seqs.get(room, 0) + 1
            markup = html.escape(body)
            try:
                self.db.execute(
                    "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (room, seq, nick, cid, body, markup, req["ts"]),
                )
            except sqlite3.IntegrityError:
                answers.append(orjson.dumps({"op": "rejected", "ref": req["ref"], "code": "duplicate",
                                             "reason": "message id already used"}) + b"\n")
                continue
            self.seqs[room] = seq
            message = {"type": "message", "room": room, "seq": seq, "id": cid, "nick": nick, "body": body,
                       "html": markup, "mentions": [], "links": [], "ts": req["ts"]}
            answers.append(orjson.dumps({"op": "processed", "ref": req["ref"], "message": message}) + b"\n")
        self.db.execute("COMMIT")
        return answers


class _Connection(asyncio.Protocol):
    def __init__(self, store: _Store) -> None:
        self._store = store
        self._buffer = b""
        self._greeted = False
        self._nonce = new_nonce()
        self.transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        set_nodelay(transport)
        self.transport.write(orjson.dumps(processor_hello(self._nonce)) + b"\n")

    def _greet(self, hello: dict[str, object]) -> bool:
        """Squall's handshake (docs/protocol.md §6): a peer without the key is dropped."""
        try:
            theirs = check_web_hello(hello, key=_KEY, our_nonce=self._nonce)
        except HandshakeFailed:
            self.transport.abort()
            return False
        self.transport.write(orjson.dumps(welcome(key=_KEY, their_nonce=theirs, our_nonce=self._nonce)) + b"\n")
        self._greeted = True
        return True

    def data_received(self, data: bytes) -> None:
        lines = (self._buffer + data).split(b"\n")
        self._buffer = lines.pop()
        if len(self._buffer) > MAX_LINE:
            self.transport.abort()
            return
        requests = []
        for line in lines:
            if not line:
                continue
            req = orjson.loads(line)
            if not self._greeted:
                if not self._greet(req):
                    return
            elif req.get("op") == "process":
                requests.append(req)
        if requests:
            self.transport.write(b"".join(self._store.store(requests)))


async def start(args: argparse.Namespace) -> asyncio.Server:
    """Open the store in ``args.data_dir`` (a temporary one if unset) and listen."""
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="bench-processor-")
    store = _Store(os.path.join(data_dir, "ceiling.sqlite3"), args.synchronous)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(store), args.host, args.port, backlog=BACKLOG)
    announce(server.sockets[0].getsockname()[1])
    return server


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", default=None, help="directory for the SQLite file (default: a new temp dir)")
    parser.add_argument("--synchronous", default="FULL", choices=sorted(SYNCHRONOUS),
                        help="SQLite's synchronous setting (default %(default)s, as Squall's store)")


if __name__ == "__main__":
    serve_main("Raw asyncio + sqlite3 processor ceiling.", start, add_arguments=_add_arguments)
