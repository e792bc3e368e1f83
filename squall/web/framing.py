"""The one place that leans on the internals of websockets' sans-I/O ``Protocol``.

A :class:`~squall.web.websocket.ChatConnection` frames its traffic with
``websockets.protocol.Protocol``, but an idle connection does not keep one.
Between two frames of an open connection a ``Protocol`` holds nothing that a
new one would not — state OPEN, no byte of a next frame, no fragmented message
begun — and yet it costs about 1.3 KiB (its parser generator with the last
frame, a stream reader, a UUID, three lists): a third of what an idle
connection may cost. So :func:`between_frames` says when one can be let go,
and :func:`new_framing` makes the next when bytes arrive (a few microseconds,
once per read, not per delivery).

:func:`between_frames` reads ``Protocol.current_size`` and asks the
protocol's parser generator where it waits: for the first byte of a next frame
(in ``StreamReader.at_eof``), or inside one (its header may be read already,
with nothing left in the buffer). :func:`check_internals` fails loudly if a
websockets upgrade changes any of that (``tests/test_framing.py``).
"""

from __future__ import annotations

import logging

from websockets.protocol import Protocol, Side, State
from websockets.streams import StreamReader

_WAITING_FOR_A_FRAME = StreamReader.at_eof.__code__

__all__ = ["new_framing", "between_frames", "check_internals"]


def new_framing(*, max_size: int, logger: logging.Logger) -> Protocol:
    """A server-side framing state machine for an open connection.

    ``max_size`` is the largest message, in bytes, a client may send (more
    closes the connection with 1009).
    """
    return Protocol(Side.SERVER, max_size=max_size, logger=logger)


def between_frames(protocol: Protocol) -> bool:
    """Whether ``protocol`` is open and holds nothing a new one would not.

    Call it only after taking everything the protocol has for you
    (``events_received()`` and ``data_to_send()``).
    """
    if protocol.state is not State.OPEN or protocol.current_size is not None:
        return False  # closing, or a fragmented message begun
    # The parser is a generator; between frames it waits in the reader's
    # at_eof() (which yields only on an empty buffer), inside one in
    # Frame.parse, however much of the frame it has consumed.
    waiting = protocol.parser.gi_yieldfrom
    return waiting is not None and getattr(waiting, "gi_code", None) is _WAITING_FOR_A_FRAME


def check_internals(protocol: Protocol) -> None:
    """Raise if this websockets no longer has what :func:`between_frames` reads.

    ``protocol`` must be new (its parser waits for a first frame).
    """
    if not hasattr(protocol, "current_size"):
        raise RuntimeError("websockets Protocol.current_size changed; update squall/web/framing.py")
    waiting = getattr(getattr(protocol, "parser", None), "gi_yieldfrom", None)
    if getattr(waiting, "gi_code", None) is not _WAITING_FOR_A_FRAME:
        raise RuntimeError("websockets Protocol.parser no longer waits in StreamReader.at_eof;"
                           " update squall/web/framing.py")
