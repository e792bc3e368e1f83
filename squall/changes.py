"""What a change does to the message it targets, without I/O.

Theory of operation. An edit, a delete or a reaction is a :class:`Draft` of a
change kind (``squall.message.CHANGE_KINDS``) naming its ``target`` seq. Inside
the store's transaction — so that two changes to one message never both read
the same state — the store reads the target, calls :func:`apply_change`, and
either stores nothing (a refusal, answered to the sender with its code) or
writes the new state back to the target row and stores the change as a row of
its own, with the room's next seq. Both stores call this one function, so
SQLite and PostgreSQL refuse and change alike.

The rules, each with the code a refusal carries:

* the target must be a message of the room, not a change and not deleted
  (``not_found``; a delete of a deleted message too: there is nothing left);
* only its author edits (``forbidden``), within ``edit_window_ms`` of the
  message's ``ts`` as the edit's own ``ts`` says (``edit_window``; a window
  of 0 allows no edit at all);
* its author or a moderator deletes (``forbidden``);
* a reaction adds one nick under one emoji, at most ``max_reactions``
  distinct emoji per message (``too_many_reactions``); reacting twice with the
  same emoji, or taking back one never given, changes nothing but is stored
  all the same — the client gets its ack and everyone the (unchanged) state.

A reply is checked here too (:func:`reply_snippet`): it must answer a message
of the room that is not deleted.
"""

from __future__ import annotations

import dataclasses

from .message import SNIPPET_CHARS, ChangeRules, Draft
from .protocol import nick_key

__all__ = ["Applied", "apply_change", "reply_snippet"]


@dataclasses.dataclass(frozen=True, slots=True)
class Applied:
    """The outcome of one change: the target's new ``state`` and the mentions
    an edit added (to be mailed), or a ``refusal`` (code, reason)."""

    state: Draft | None = None
    added_mentions: tuple[str, ...] = ()
    refusal: tuple[str, str] | None = None


def _missing(change: Draft, target: Draft | None) -> tuple[str, str] | None:
    if target is None or target.is_change:
        return ("not_found", f"there is no message {change.target} in room {change.room}")
    if target.deleted:
        return ("not_found", f"message {change.target} in room {change.room} was deleted")
    return None


def apply_change(target: Draft | None, change: Draft, rules: ChangeRules) -> Applied:
    """What ``change`` makes of ``target`` (None: no row has that seq)."""
    refusal = _missing(change, target)
    if refusal is not None:
        return Applied(refusal=refusal)
    assert target is not None
    actor = nick_key(change.nick)
    author = nick_key(target.nick) == actor
    if change.kind == "edit":
        if not author:
            return Applied(refusal=("forbidden", "only its author may edit a message"))
        if rules.edit_window_ms <= 0 or change.ts - target.ts > rules.edit_window_ms:
            return Applied(refusal=(
                "edit_window",
                f"a message may be edited for {rules.edit_window_ms / 1000:g} s after it was sent",
            ))
        had = {nick_key(n) for n in target.mentions}
        state = dataclasses.replace(
            target, body=change.body, html=change.html, mentions=change.mentions, links=change.links,
            previews=(), edited=change.ts,
        )
        added = tuple(n for n in change.mentions if nick_key(n) not in had)
        return Applied(state=state, added_mentions=added)
    if change.kind == "delete":
        if not (author or change.moderator):
            return Applied(refusal=("forbidden", "only its author or a moderator may delete a message"))
        return Applied(state=dataclasses.replace(
            target, body="", html="", mentions=(), links=(), previews=(), reactions=(),
            reply_snippet=None, deleted=True,
        ))
    if change.kind in ("react", "unreact"):
        return _react(target, change, actor, rules)
    return Applied(refusal=("bad_field", f"unknown change {change.kind!r}"))


def _react(target: Draft, change: Draft, actor: str, rules: ChangeRules) -> Applied:
    emoji = change.emoji or ""
    reactions = dict(target.reactions)
    nicks = reactions.get(emoji, ())
    has = any(nick_key(n) == actor for n in nicks)
    if change.kind == "react" and not has:
        if emoji not in reactions and len(reactions) >= rules.max_reactions:
            return Applied(refusal=(
                "too_many_reactions",
                f"message {change.target} has {len(reactions)} different reactions already"
                f" (limit {rules.max_reactions})",
            ))
        reactions[emoji] = (*nicks, change.nick)
    elif change.kind == "unreact" and has:
        left = tuple(n for n in nicks if nick_key(n) != actor)
        if left:
            reactions[emoji] = left
        else:
            del reactions[emoji]
    return Applied(state=dataclasses.replace(target, reactions=tuple(reactions.items())))


def reply_snippet(reply: Draft, target: Draft | None) -> tuple[tuple[str, str] | None, tuple[str, str] | None]:
    """``(snippet, refusal)`` for a message that answers ``target``: the
    target's author and the first ``SNIPPET_CHARS`` characters of its body."""
    refusal = _missing(dataclasses.replace(reply, target=reply.reply_to), target)
    if refusal is not None:
        return None, refusal
    assert target is not None
    body = target.body if len(target.body) <= SNIPPET_CHARS else target.body[: SNIPPET_CHARS - 1] + "…"
    return (target.nick, body), None
