"""Squall's benchmark harness: ``python -m bench`` (or ``make bench``).

It measures Squall against three references in the same run: a *ceiling*, the
least work a raw asyncio server can do for the same job, storing each message
through its own processor as Squall does (:mod:`bench.ceiling_ws`,
:mod:`bench.ceiling_longpoll`, :mod:`bench.ceiling_processor`); the same
ceiling *coalescing* the messages of one processor read into one write per
member, as Squall does (``--coalesce``); and a *peer*, the ``websockets``
library's ``broadcast()`` (:mod:`bench.peer_websockets`). Ratios within one run
cancel out most of what differs between machines. docs/performance.md explains
the scenarios and how to read the table.

Modules: :mod:`bench.frames` (RFC 6455 bits), :mod:`bench.link` (the web
node's side of the processor link), :mod:`bench.loadgen` (the clients),
:mod:`bench.targets` (starting and measuring servers), :mod:`bench.scenarios`,
:mod:`bench.report`, :mod:`bench.serving` (shared by the server processes).
"""
