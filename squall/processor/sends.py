"""Sends waiting for a processor's answer: the table both ways of reaching
processors share (TCP links, :mod:`squall.processor.pool`, and the queue,
:mod:`squall.queue.client`).

Theory of operation. A send is keyed by ``(room, casefolded nick, id)``, the
store's idempotency key: a resend of a send still in flight joins it instead of
becoming a second request, so the client gets one answer. The table is bounded
(``max_pending``); past the bound a send is refused with ``unavailable`` before
anything is written. ``ref`` numbers every request of one web node, so that an
answer finds its send whichever processor (or queue consumer) gave it.

A caller waits with :func:`answer_of` for at most ``send_timeout`` seconds; the
owner of the table decides what a timeout leaves behind (see ``on_timeout``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from ..errors import ClientError, Forbidden, Internal, NotFound, Rejected, Unavailable
from ..protocol import nick_key

log = logging.getLogger("squall.link")

__all__ = [
    "Send", "PendingSends", "answer_of", "unavailable_answer", "route_answer", "process_request",
]

SendKey = tuple[str, str, str]


def process_request(
    ref: int, *, room: str, nick: str, id: str, body: str, ts: int,
    attachments: Sequence[dict[str, Any]], event: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The ``process`` request for one message or change, over a TCP link or the
    queue (docs/protocol.md §6): attachments only when there are some, and a
    change's or reply's own fields (``event``) as they are."""
    return {
        "op": "process", "ref": ref, "room": room, "nick": nick, "id": id, "body": body, "ts": ts,
        **({"attachments": list(attachments)} if attachments else {}), **(event or {}),
    }


class Send:
    """One request and the future its answer resolves.

    ``written`` is true once the request may have reached a processor: from
    then on it may be stored, and its answer must still be published.
    ``owner`` is whatever currently carries it (a link), if anything.
    """

    __slots__ = ("ref", "key", "room", "line", "future", "written", "owner")

    def __init__(self, ref: int, key: SendKey, room: str, line: bytes) -> None:
        self.ref = ref
        self.key = key
        self.room = room
        self.line = line
        self.future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.written = False
        self.owner: Any = None


class PendingSends:
    """Sends without an answer yet, by ``ref`` and by idempotency key, at most ``max_pending``.

    :param max_pending: sends that may wait at once; one more is :class:`Unavailable`.
    :param waiting_for: what they wait for, as the refusal names it ("the processor").
    """

    def __init__(self, *, max_pending: int, waiting_for: str) -> None:
        self.max_pending = max_pending
        self.waiting_for = waiting_for
        self._by_ref: dict[int, Send] = {}
        self._by_key: dict[SendKey, Send] = {}
        self._refs = itertools.count(1)

    def __len__(self) -> int:
        return len(self._by_ref)

    def __iter__(self) -> Iterator[Send]:
        return iter(list(self._by_ref.values()))

    def joined(self, room: str, nick: str, id: str) -> Send | None:
        """The send in flight with this idempotency key, if any: wait on it."""
        return self._by_key.get((room, nick_key(nick), id))

    def start(self, room: str, nick: str, id: str, encode: Callable[[int], bytes]) -> Send:
        """A new send; ``encode(ref)`` makes its request. Raises :class:`Unavailable` when full."""
        if len(self._by_ref) >= self.max_pending:
            raise Unavailable(
                f"{len(self._by_ref)} messages are already waiting for {self.waiting_for}"
                f" (limit {self.max_pending}); retry with the same id"
            )
        ref = next(self._refs)
        send = Send(ref, (room, nick_key(nick), id), room, encode(ref))
        self._by_ref[ref] = send
        self._by_key[send.key] = send
        return send

    def get(self, ref: Any) -> Send | None:
        return self._by_ref.get(ref) if isinstance(ref, int) else None

    def settle(self, ref: Any, answer: dict[str, Any]) -> Send | None:
        """Answer the send ``ref`` (if it still waits) and forget it; returns it."""
        send = self.get(ref)
        if send is not None:
            self.forget(send)
            if not send.future.done():
                send.future.set_result(answer)
        return send

    def forget(self, send: Send) -> None:
        self._by_ref.pop(send.ref, None)
        if self._by_key.get(send.key) is send:
            del self._by_key[send.key]


# The HTTP status of a refusal follows its code: a change to no message is 404,
# one its sender may not make 403; the rest of the pipeline's refusals are 422.
_ERRORS: dict[str, type[ClientError]] = {
    "internal": Internal, "unavailable": Unavailable, "not_found": NotFound,
    "forbidden": Forbidden, "edit_window": Forbidden,
}


def unavailable_answer(reason: str) -> dict[str, Any]:
    """An answer that makes :func:`answer_of` raise :class:`Unavailable` with ``reason``."""
    return {"op": "rejected", "code": "unavailable", "reason": reason}


async def answer_of(
    send: Send, timeout: float, *, on_timeout: Callable[[Send], None], waiting_for: str
) -> dict[str, Any]:
    """The processed message once ``send`` is answered.

    Raises :class:`Rejected` (or :class:`Internal`) when the pipeline refused
    it, and :class:`Unavailable` when no answer came within ``timeout`` seconds
    (after calling ``on_timeout(send)``).
    """
    try:
        answer = await asyncio.wait_for(asyncio.shield(send.future), timeout)
    except asyncio.TimeoutError:
        on_timeout(send)
        raise Unavailable(
            f"{waiting_for} did not answer within {timeout:g} s; retry with the same id"
        ) from None
    if answer["op"] == "rejected":
        code = str(answer.get("code", "rejected"))
        error = _ERRORS.get(code, Rejected)
        raise error(str(answer.get("reason", "")), code=code)
    message: dict[str, Any] = answer["message"]
    return message


def route_answer(
    value: dict[str, Any],
    processed: list[dict[str, Any]],
    *,
    settle: Callable[[Any, dict[str, Any]], None],
    on_processed: Callable[[list[dict[str, Any]]], None],
    on_updated: Callable[[dict[str, Any]], None] | None,
) -> bool:
    """Route one line a processor answered, over a TCP link or through the queue.

    A ``processed`` message joins ``processed`` (published together with the
    rest of its read); every answer settles its send through ``settle``; an
    ``updated`` first publishes what came before it, so a message always goes
    out before what updates it. Returns False for a line that is no answer
    (``pong``, or an op this node does not know), for the caller to judge.
    """
    op = value.get("op")
    if op in ("processed", "rejected"):
        if op == "processed" and isinstance(value.get("message"), dict):
            processed.append(value["message"])
        settle(value.get("ref"), value)
    elif op == "updated":
        if processed:  # keep the order: messages first, then what updates them
            on_processed(processed[:])
            processed.clear()
        if on_updated is not None:
            on_updated(value)
    elif op == "error":
        log.error("a processor refused a request: %s", value)
        settle(value.get("ref"), {
            "op": "rejected", "code": "internal", "reason": "the server could not process this message",
        })
    else:
        return False
    return True
