"""Processors reached through a queue: Redis Streams with a consumer group.

Theory of operation. With ``--queue redis://…`` a web node does not dial
processors: it adds each send to one stream, ``<prefix>:sends`` (``XADD``), and
every processor reads that stream as a member of one consumer group,
``processors`` (``XREADGROUP``), so each entry goes to one of them. A processor
runs an entry through the same pipeline as a TCP request, and only once the
result is stored does it, in one Lua script (atomic, as ``MULTI`` is), add the
answer to the asking node's reply stream ``<prefix>:replies:<node id>`` and
acknowledge and delete the entry (``XACK``, ``XDEL``); a node's answers of one
round travel in one reply entry. The node reads its reply stream (``XREAD``)
and answers its clients as over TCP.

An entry stays in the group's pending list from delivery to ``XACK``. If its
processor dies, the entry is not lost: every processor periodically takes over
entries idle for longer than ``queue_claim_idle`` (``XAUTOCLAIM``) and
processes them. A takeover of an entry the first processor had already stored
(it died between commit and ``XACK``) is answered by the store as a duplicate,
with the original seq; the node publishes it once (the hub drops the second
copy) and the client gets one ack. An entry delivered ``MAX_DELIVERIES`` times
without an acknowledgement (one that kills every processor that takes it) is
answered ``internal`` and acknowledged instead of going round for ever.

Bounds. The send stream is never trimmed with ``MAXLEN``: trimming drops the
oldest entries whether or not they were processed. It holds only work not yet
done instead (processed entries are deleted), and a node adds entries only while
it holds fewer than ``queue_max_len`` (one Lua script checks ``XLEN`` and adds
the batch, atomically); past that, sends get ``unavailable``. Each node also
bounds its sends in flight (``max_pending_sends``) and its wait for a reply
(``send_timeout``). Reply streams are capped (``REPLY_MAX_LEN``, approximate
``MAXLEN``: a reply lost there only costs a client a retry, answered from the
store) and expire when no processor wrote to them for ``REPLY_TTL_SECONDS``.

Authentication. Anyone who can write to Redis could add entries; so every entry
is signed with the link key (:func:`squall.handshake.link_key`, the same that
authenticates TCP links): HMAC-SHA256 over a role label and the payload. A
processor drops (and acknowledges) an entry whose signature does not verify,
and a node ignores such a reply; the labels keep a reply from passing as a send.

This module holds the pure parts: key names and the entry codec. The I/O is in
:mod:`squall.queue.client` (web node) and :mod:`squall.queue.worker` (processor).
"""

from __future__ import annotations

import dataclasses
import hmac
import re
from typing import Any

import orjson

from ..config import redacted_url

__all__ = [
    "QueueKeys", "GROUP", "SEND_ROLE", "REPLY_ROLE", "REPLY_MAX_LEN", "REPLY_TTL_SECONDS",
    "NODE_ID", "sign", "encode_entry", "decode_entry", "redacted_url",
]

# The consumer group every processor of one queue joins.
GROUP = "processors"
# Role labels of signatures: a reply can never pass as a send, nor the reverse.
SEND_ROLE = b"squall-queue-send"
REPLY_ROLE = b"squall-queue-reply"
# A reply stream holds about this many unread replies at most: a node reads
# its replies as they come, so only a node that stopped reading reaches it.
REPLY_MAX_LEN = 100_000
# A reply stream no processor wrote to for this long is deleted by Redis: the
# node that read it is gone (a live node's next reply creates it again).
REPLY_TTL_SECONDS = 300
# A node id: 16 hex digits, random per web-node process; part of a key name.
NODE_ID = re.compile(r"[0-9a-f]{16}")


@dataclasses.dataclass(frozen=True)
class QueueKeys:
    """The Redis keys of one queue, all under ``prefix``."""

    prefix: str

    @property
    def sends(self) -> str:
        return f"{self.prefix}:sends"

    def replies(self, node: str) -> str:
        return f"{self.prefix}:replies:{node}"


def sign(key: bytes, role: bytes, payload: bytes) -> bytes:
    """Hex HMAC-SHA256 of ``payload`` under ``key`` for ``role``."""
    return hmac.digest(key, role + b"\n" + payload, "sha256").hex().encode("ascii")


def encode_entry(key: bytes, role: bytes, value: dict[str, Any]) -> dict[bytes, bytes]:
    """A stream entry's fields: ``m``, the JSON payload, and ``s``, its signature."""
    payload = orjson.dumps(value)
    return {b"m": payload, b"s": sign(key, role, payload)}


def decode_entry(
    key: bytes, role: bytes, fields: dict[bytes, bytes], *, max_bytes: int
) -> dict[str, Any] | str:
    """The entry's JSON object if its signature verifies; else why not (a log line).

    An entry over ``max_bytes`` is refused before it is verified or parsed.
    """
    payload, signature = fields.get(b"m"), fields.get(b"s")
    if not isinstance(payload, bytes) or not isinstance(signature, bytes):
        return f"fields {sorted(str(k)[:20] for k in fields)[:5]} are not m and s"
    if len(payload) > max_bytes:
        return f"payload of {len(payload)} bytes exceeds the limit of {max_bytes}"
    if not hmac.compare_digest(sign(key, role, payload), signature):
        return "signature does not match this instance's secret"
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return f"payload is not JSON: {exc}"
    if not isinstance(value, dict):
        return "payload is not a JSON object"
    return value


