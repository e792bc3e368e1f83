"""The chat message as it moves through Squall.

A :class:`Draft` is what the web node hands to the processor; each pipeline stage
returns a changed copy (``dataclasses.replace``), and the store stage fills in
``seq``. :meth:`Draft.to_wire` is the one place that turns a message into the dict
clients see as ``{"type": "message", ...}``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["Draft", "LinkPreview"]


@dataclasses.dataclass(frozen=True, slots=True)
class Draft:
    room: str
    nick: str
    id: str  # the client's message id (CID)
    body: str
    ts: int  # milliseconds since the Unix epoch, stamped by the web node on receipt
    html: str = ""
    mentions: tuple[str, ...] = ()
    links: tuple[str, ...] = ()
    seq: int | None = None
    # True once the store has seen this (room, nick, id) before: later stages
    # with side effects (previews, e-mail) must not act twice.
    duplicate: bool = False
    # Link previews (LinkPreview.to_wire() dicts), filled in after delivery.
    previews: tuple[dict[str, Any], ...] = ()
    # Uploaded files (squall.files.FileRecord.to_wire() dicts), checked and
    # resolved by the web node: the sender's own uploads.
    attachments: tuple[dict[str, Any], ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": "message",
            "room": self.room,
            "seq": self.seq,
            "id": self.id,
            "nick": self.nick,
            "body": self.body,
            "html": self.html,
            "mentions": list(self.mentions),
            "links": list(self.links),
            "ts": self.ts,
            **({"previews": list(self.previews)} if self.previews else {}),
            **({"attachments": list(self.attachments)} if self.attachments else {}),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class LinkPreview:
    url: str
    title: str | None = None
    description: str | None = None
    image: str | None = None
    site_name: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
