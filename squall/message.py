"""The chat message as it moves through Squall.

A :class:`Draft` is what the web node hands to the processor; each pipeline stage
returns a changed copy (``dataclasses.replace``), and the store stage fills in
``seq``. :meth:`Draft.to_wire` is the one place that turns a message into the dict
clients see as ``{"type": "message", ...}``.

Changes to a message — an edit, a delete, a reaction added or removed — are
drafts too, of another :attr:`Draft.kind`, with the ``target`` seq they change.
The store gives each change the room's next seq, like a message, and returns
it with ``state``: the target message as it is after the change. On the wire a
change is ``{"type": "change", ...}`` carrying that whole state under
``message``, so a client replaces what it holds (docs/protocol.md, "Changes").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = [
    "Draft", "LinkPreview", "ChangeRules", "MESSAGE", "CHANGE_KINDS", "BODY_KINDS", "SNIPPET_CHARS",
    "reactions_from_json", "wire_mentions", "REACTORS_LISTED",
]

MESSAGE = "message"
# What a change does to its target; "edit" alone carries a body (and goes
# through the content stages), the rest carry none.
CHANGE_KINDS = ("edit", "delete", "react", "unreact")
BODY_KINDS = (MESSAGE, "edit")
# How much of the message a reply quotes (characters of its body).
SNIPPET_CHARS = 100
# Nicks listed per emoji in a message's `reactions` on the wire (the first to
# react); `reaction_counts` has the full counts. The store keeps them all. It
# bounds the frame a reaction costs every member: at most max_reactions x this
# nicks, however many thousands react (a frame must stay far below the
# outbound_bytes a slow member's buffer is cut at, and the link's line limit).
REACTORS_LISTED = 100


@dataclasses.dataclass(frozen=True, slots=True)
class ChangeRules:
    """What the store allows a change: edits within ``edit_window_ms`` of the
    message's ``ts`` (by the edit's ``ts``), at most ``max_reactions`` distinct
    emoji on one message."""

    edit_window_ms: int = 900_000
    max_reactions: int = 20


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
    # "message", or one of CHANGE_KINDS; a change names the seq it changes.
    kind: str = MESSAGE
    target: int | None = None
    emoji: str | None = None  # react / unreact
    # A reply: the seq it answers, and (filled in by the store) (author, first
    # SNIPPET_CHARS of the body) of that message; None once it is deleted.
    reply_to: int | None = None
    reply_snippet: tuple[str, str] | None = None
    # A message's current state: when it was last edited (ms), whether it is a
    # tombstone, and its reactions (emoji, nicks who reacted), in first-use order.
    edited: int | None = None
    deleted: bool = False
    reactions: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # A delete request only: the web node vouches the author may moderate the room.
    moderator: bool = False
    # A stored change: the target as it is after it.
    state: Draft | None = None
    # A change the store refused: (code, reason); nothing was stored.
    refusal: tuple[str, str] | None = None

    @property
    def is_change(self) -> bool:
        return self.kind != MESSAGE

    def to_wire(self) -> dict[str, Any]:
        if self.is_change:
            return self._change_to_wire()
        wire: dict[str, Any] = {
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
        }
        # Only what a message has: a plain message costs no more bytes than before.
        if self.previews:
            wire["previews"] = list(self.previews)
        if self.attachments and not self.deleted:  # a tombstone shows no files
            wire["attachments"] = list(self.attachments)
        if self.reply_to is not None:
            wire["reply_to"] = self.reply_to
            wire["reply_snippet"] = (
                {"nick": self.reply_snippet[0], "body": self.reply_snippet[1]} if self.reply_snippet else None
            )
        if self.edited is not None:
            wire["edited"] = True
            wire["edited_ts"] = self.edited
        if self.deleted:
            wire["deleted"] = True
        if self.reactions:
            wire["reactions"] = {emoji: list(nicks[:REACTORS_LISTED]) for emoji, nicks in self.reactions}
            wire["reaction_counts"] = {emoji: len(nicks) for emoji, nicks in self.reactions}
        return wire

    def _change_to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "type": "change",
            "kind": self.kind,
            "room": self.room,
            "seq": self.seq,
            "id": self.id,
            "nick": self.nick,
            "ts": self.ts,
            "target": self.target,
        }
        if self.emoji is not None:
            wire["emoji"] = self.emoji
        if self.state is not None:
            wire["message"] = self.state.to_wire()
        return wire


def reactions_from_json(value: Mapping[str, Any]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Reactions as stored (``{emoji: [nick, ...]}``, in first-use order) as a :class:`Draft` holds them."""
    return tuple((str(emoji), tuple(str(n) for n in nicks)) for emoji, nicks in value.items())


def wire_mentions(message: Mapping[str, Any]) -> tuple[str, ...]:
    """The nicks a processed message or change (wire form) mentions: for an
    edit, those of the new text, since an edit may mention someone anew."""
    if message.get("type") == "change" and message.get("kind") != "edit":
        return ()
    state = message.get("message") if message.get("type") == "change" else message
    if not isinstance(state, Mapping):
        return ()
    return tuple(state.get("mentions", ()))


@dataclasses.dataclass(frozen=True, slots=True)
class LinkPreview:
    url: str
    title: str | None = None
    description: str | None = None
    image: str | None = None
    site_name: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
