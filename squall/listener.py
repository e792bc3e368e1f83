"""Listening sockets: accepting connections without spinning when the process
runs out of file descriptors, and the open-file limit that decides when it does.

Theory of operation. When ``accept()`` fails with EMFILE (this process has as
many files open as ``RLIMIT_NOFILE`` allows) or ENFILE, ENOBUFS, ENOMEM (the
system is out), the connection stays in the kernel's queue and the listening
socket stays readable. An event loop that only logs the error and returns is
called again at once, and spins: Tornado's ``add_accept_handler`` logged about
11 000 tracebacks in 10 s that way, at up to 98 % CPU, while every new client
timed out. :class:`Listener` instead stops watching its sockets for a pause that
doubles with each failure in a row (:class:`AcceptBackoff`: 50 ms up to 2 s);
the first accept that works resets it. Meanwhile new connections wait in the
kernel's backlog (or are refused by it once it is full), and the connections
already open free their descriptors by closing or by timing out
(``header_timeout``, ``idle_timeout``). The failure is logged at most once per
``report_every`` seconds, with how many times it happened since the last line.

:func:`raise_open_file_limit` raises the soft limit to the hard one at start-up:
the usual soft limit of 1024 is far below what a chat server needs, and the
hard limit is what the operator allowed.

Nothing here imports Tornado; the web node hands each accepted socket to its
HTTP server.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import socket
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["AcceptBackoff", "Pause", "Listener", "raise_open_file_limit"]

log = logging.getLogger("squall.listener")

# At most this many accepts per readable event, so that a flood of new
# connections cannot starve the ones already open (Tornado accepts 128).
ACCEPTS_PER_EVENT = 128
# Errors that say "no resources now", not "this connection is bad": retrying at
# once fails the same way.
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclasses.dataclass(frozen=True, slots=True)
class Pause:
    """Stop accepting for ``seconds``; ``report`` is the count of failures to log
    now, or None if a line was logged less than ``report_every`` ago."""

    seconds: float
    report: int | None


class AcceptBackoff:
    """How long to stop accepting after each failure, and when to say so.

    ``first`` (0.05 s) is the first pause, doubled after each failure in a row
    up to ``most`` (2 s); :meth:`succeeded` starts over. ``report_every``
    (10 s) spaces the log lines.
    """

    def __init__(self, *, first: float = 0.05, most: float = 2.0, report_every: float = 10.0) -> None:
        self.first = first
        self.most = most
        self.report_every = report_every
        self.pause = 0.0  # the last pause; 0 once accepting works again
        self.unreported = 0  # failures since the last log line
        self.reported_at: float | None = None

    def failed(self, *, now: float) -> Pause:
        """An accept failed for lack of resources at ``now`` (seconds, any clock)."""
        self.pause = min(self.most, self.pause * 2) if self.pause else self.first
        self.unreported += 1
        if self.reported_at is not None and now - self.reported_at < self.report_every:
            return Pause(self.pause, None)
        count, self.unreported, self.reported_at = self.unreported, 0, now
        return Pause(self.pause, count)

    def succeeded(self) -> None:
        self.pause = 0.0


class Listener:
    """Accepts connections on ``sockets`` (bound and listening) and passes each
    to ``on_connection(connection, address)``, which owns it from then on.

    Call :meth:`start` in the event loop, and :meth:`stop` to close the sockets.
    """

    def __init__(
        self,
        sockets: Sequence[socket.socket],
        on_connection: Callable[[socket.socket, Any], None],
        *,
        backoff: AcceptBackoff | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.sockets = list(sockets)
        self.on_connection = on_connection
        self.backoff = backoff or AcceptBackoff()
        self.log = logger or log
        self._loop: asyncio.AbstractEventLoop | None = None
        self._resume: asyncio.TimerHandle | None = None
        self._stopped = False

    @property
    def port(self) -> int:
        """The port of the first socket (useful when bound to port 0)."""
        return int(self.sockets[0].getsockname()[1])

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for sock in self.sockets:
            sock.setblocking(False)
        self._watch()

    def stop(self) -> None:
        """Stop accepting and close the listening sockets (open connections stay)."""
        if self._stopped:
            return
        self._stopped = True
        if self._resume is not None:
            self._resume.cancel()
            self._resume = None
        else:
            self._unwatch()
        for sock in self.sockets:
            sock.close()

    def _watch(self) -> None:
        assert self._loop is not None
        self._resume = None
        if self._stopped:
            return
        for sock in self.sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _unwatch(self) -> None:
        assert self._loop is not None
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPTS_PER_EVENT):
            if self._resume is not None or self._stopped:
                return
            try:
                connection, address = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue  # the client gave up while queued
            except OSError as exc:
                self._pause(sock, exc)
                return
            self.backoff.succeeded()
            try:
                self.on_connection(connection, address)
            except Exception:
                self.log.exception("serving a connection from %s failed", address)
                connection.close()

    def _pause(self, sock: socket.socket, exc: OSError) -> None:
        assert self._loop is not None
        pause = self.backoff.failed(now=self._loop.time())
        self._unwatch()
        self._resume = self._loop.call_later(pause.seconds, self._watch)
        if pause.report is None:
            return
        where = sock.getsockname()
        what = "out of file descriptors" if exc.errno in (errno.EMFILE, errno.ENFILE) else "cannot accept"
        self.log.error(
            "%s: accept() on %s failed %d time%s since the last report (%s); "
            "not accepting for %.2f s at a time, up to %.0f s, until it works again",
            what, where, pause.report, "" if pause.report == 1 else "s", exc,
            pause.seconds, self.backoff.most,
        )


def raise_open_file_limit(logger: logging.Logger | None = None) -> int | None:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit; returns
    the soft limit now in force (None where there is no such limit)."""
    logger = logger or log
    try:
        import resource
    except ImportError:  # Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit (macOS) is not a value setrlimit takes for the
    # soft one; the kernel's own per-process cap applies there.
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            logger.info("open files limit stays at %d (raising it to %d failed: %s)", soft, target, exc)
            return soft
        logger.info("open files limit raised from %d to %d", soft, target)
        return target
    logger.info("open files limit is %s", "unlimited" if soft == resource.RLIM_INFINITY else soft)
    return soft
