"""Helpers for the end-to-end pipeline tests (``test_e2e_pipeline_*.py``).

* :class:`MailRecorder` / :func:`smtp_server` — a real aiosmtpd SMTP server on
  127.0.0.1 that keeps every message it accepts and wakes waiters.
* :class:`LocalSite` — a small Tornado HTTP server for link previews. Its
  listening socket is bound up front (so its port can go into the Squall
  server's allow-list before anything runs); each test serves it from its own
  event loop through a duplicate of that socket.

Nothing here sleeps: waits are on conditions and futures, bounded by
:data:`support.TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email
import email.policy
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import tornado.web
from aiosmtpd.controller import Controller
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from support import TIMEOUT, ChatClient, SquallProcess, free_port

__all__ = [
    "TESTS_DIR", "Mail", "MailRecorder", "smtp_server", "LocalSite", "Page",
    "make_user", "post", "Inbox", "connect",
]

TESTS_DIR = Path(__file__).resolve().parent


# -- SMTP -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Mail:
    rcpt: tuple[str, ...]
    message: EmailMessage

    @property
    def text(self) -> str:
        """The text/plain body."""
        part = self.message.get_body(preferencelist=("plain",))
        assert part is not None, self.message
        return str(part.get_content())


class MailRecorder:
    """An aiosmtpd handler that records every accepted message.

    ``handle_DATA`` runs on the controller's own thread; waiters use a
    :class:`threading.Condition`, from test code or (via ``asyncio.to_thread``)
    from a coroutine.
    """

    def __init__(self) -> None:
        self.mails: list[Mail] = []
        self._changed = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._changed:
            self.mails.append(Mail(tuple(envelope.rcpt_tos), message))
            self._changed.notify_all()
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[Mail]:
        with self._changed:
            return [m for m in self.mails if address in m.rcpt]

    def wait_for(self, address: str, count: int = 1, timeout: float = TIMEOUT) -> list[Mail]:
        """Block until ``address`` has received ``count`` mails; returns all of theirs."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                mails = [m for m in self.mails if address in m.rcpt]
                if len(mails) >= count:
                    return mails
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"{address} got {len(mails)} mail(s), not {count}, within {timeout} s;"
                        f" all mail so far went to {[m.rcpt for m in self.mails]}"
                    )
                self._changed.wait(remaining)

    def wait_until(self, done: Callable[[list[Mail]], bool], timeout: float = TIMEOUT) -> list[Mail]:
        """Block until ``done(every mail so far)`` holds; returns those mails."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not done(self.mails):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{len(self.mails)} mail(s) within {timeout} s, not what was awaited")
                self._changed.wait(remaining)
            return list(self.mails)

    async def wait_for_async(self, address: str, count: int = 1, timeout: float = TIMEOUT) -> list[Mail]:
        return await asyncio.to_thread(self.wait_for, address, count, timeout)


@contextmanager
def smtp_server(port: int | None = None) -> Iterator[tuple[MailRecorder, int]]:
    """A running SMTP server on 127.0.0.1 (on ``port``, else a free one)."""
    recorder = MailRecorder()
    port = port or free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield recorder, port
    finally:
        controller.stop()


# -- squall set-up over HTTP --------------------------------------------------------


def make_user(server: SquallProcess, nick: str, email_address: str | None = None) -> str:
    """A session token for ``nick``, with ``email_address`` registered if given."""
    token = server.session(nick)
    if email_address is not None:
        status, body = server.api("PATCH", "/api/me", {"email": email_address}, token=token)
        assert status == 200 and body["email"] == email_address, (status, body)
    return token


def post(server: SquallProcess, room: str, token: str, body: str, cid: str) -> dict[str, Any]:
    """``POST /api/rooms/R/messages``; returns ``{"id", "seq"}`` once stored."""
    status, answer = server.api("POST", f"/api/rooms/{room}/messages", {"body": body, "id": cid}, token=token)
    assert status == 200, (status, answer)
    return dict(answer)


# -- a local web site for link previews ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Page:
    content_type: str
    body: bytes


class LocalSite:
    """A Tornado HTTP server on 127.0.0.1 with fixed pages, recording each request.

    Construct it outside any event loop (the socket is bound then); inside a
    test, ``async with site.serving():`` serves it from the running loop.
    Call :meth:`close` at the end of the module.
    """

    def __init__(self, pages: dict[str, Page]) -> None:
        self.pages = pages
        self.sockets: list[socket.socket] = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
        self.port = int(self.sockets[0].getsockname()[1])
        self.requests: list[str] = []
        self._served: list[tuple[str, asyncio.Future[None]]] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()

    def served(self, path: str) -> asyncio.Future[None]:
        """A future resolved once ``path`` has been answered (from now on)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._served.append((path, future))
        return future

    def _record(self, path: str) -> None:
        self.requests.append(path)

    def _answered(self, path: str) -> None:
        for wanted, future in self._served:
            if wanted == path and not future.done():
                future.set_result(None)

    def _app(self) -> tornado.web.Application:
        site = self

        class PageHandler(tornado.web.RequestHandler):
            def get(self) -> None:
                path = self.request.path
                site._record(path)
                page = site.pages.get(path)
                if page is None:
                    self.set_status(404)
                else:
                    self.set_header("Content-Type", page.content_type)
                    self.write(page.body)

            def on_finish(self) -> None:
                site._answered(self.request.path)

        return tornado.web.Application([(r"/.*", PageHandler)])

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[LocalSite]:
        """Serve the site from the running loop for the duration of the block."""
        server = HTTPServer(self._app())
        # A duplicate of the listening socket: stopping the server closes the
        # duplicate, and the next test can serve the same port again.
        server.add_sockets([sock.dup() for sock in self.sockets])
        try:
            yield self
        finally:
            server.stop()
            await server.close_all_connections()
            self._served.clear()


# -- WebSocket frames, kept ---------------------------------------------------------------


class Inbox:
    """Every frame a :class:`~support.ChatClient` receives, kept.

    :meth:`expect` returns the first frame (old or new) that a predicate
    accepts, so waiting for one frame never loses another; :attr:`frames`
    holds everything received, for "nobody saw X" checks after a barrier.
    """

    def __init__(self, client: ChatClient) -> None:
        self.client = client
        self.frames: list[dict[str, Any]] = []
        self._unclaimed: list[dict[str, Any]] = []

    async def expect(self, accept: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT) -> dict[str, Any]:
        for index, frame in enumerate(self._unclaimed):
            if accept(frame):
                del self._unclaimed[index]
                return frame
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.client.recv_json(deadline - loop.time())
            self.frames.append(frame)
            if accept(frame):
                return frame
            self._unclaimed.append(frame)

    async def message(self, cid: str) -> dict[str, Any]:
        return await self.expect(lambda f: f.get("type") == "message" and f.get("id") == cid)

    async def answer(self, cid: str) -> dict[str, Any]:
        """The ``ack`` or ``error`` frame answering the send ``cid``."""
        return await self.expect(lambda f: f.get("type") in ("ack", "error") and f.get("id") == cid)

    async def send(self, room: str, body: str, cid: str) -> dict[str, Any]:
        await self.client.send_json({"type": "send", "room": room, "body": body, "id": cid})
        return await self.answer(cid)

    async def close(self) -> None:
        await self.client.close()


async def connect(server: SquallProcess, token: str, *rooms: str) -> Inbox:
    """A WebSocket client joined to ``rooms``."""
    inbox = Inbox(await ChatClient.connect(server.address, token))
    try:
        for room in rooms:
            joined = await inbox.client.join(room)
            assert joined["type"] == "joined", joined
    except BaseException:
        await inbox.close()
        raise
    return inbox
