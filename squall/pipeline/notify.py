"""When to e-mail a user about a mention: a pure decision, time passed in.

A mention is worth an e-mail only if the user has not read it by the time the
``notify_delay`` window has passed. The store keeps, per user and room, the last
``seq`` the user has seen and when; the scheduler asks :func:`decide` for each
pending mention when it is due and again after the user's read marker moves.

Rules, in order:

1. The user has seen the message (``last_seen_seq >= mention_seq``): SKIP.
2. The user is connected to the room right now: SKIP. Their client shows the
   mention; an e-mail would arrive while they are reading it.
3. The window has not passed (``now < mention_ts + notify_delay``): WAIT until
   ``mention_ts + notify_delay``, then ask again.
4. Otherwise: SEND.

All times are milliseconds since the epoch, like :attr:`squall.message.Draft.ts`.
"""

from __future__ import annotations

import dataclasses
import enum

__all__ = ["Verdict", "Decision", "decide"]


class Verdict(enum.Enum):
    SEND = "send"
    WAIT = "wait"
    SKIP = "skip"


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    at: int | None = None  # for WAIT: when to decide again, ms since the epoch


def decide(
    *,
    mention_seq: int,
    mention_ts: int,
    now: int,
    notify_delay: int,
    last_seen_seq: int | None,
    online: bool = False,
) -> Decision:
    """Decide what to do about one mention; see the module docstring.

    :param notify_delay: milliseconds to give the user to read it first.
    :param last_seen_seq: the highest seq of the room the user has seen, or
        None if they never opened it.
    :param online: whether the user has a live connection in that room now.
    """
    if last_seen_seq is not None and last_seen_seq >= mention_seq:
        return Decision(Verdict.SKIP)
    if online:
        return Decision(Verdict.SKIP)
    due = mention_ts + notify_delay
    if now < due:
        return Decision(Verdict.WAIT, due)
    return Decision(Verdict.SEND)
