"""Which pending mentions of one user to e-mail: a pure decision.

The processor's notifier calls :func:`plan` once the user's earliest pending
mention has been unread for ``notify_delay``. It gets *all* of that user's
pending mentions — the ones that piled up in the window — and sorts them:

1. the user has no e-mail address (any more): every one is skipped;
2. the user has seen it (their read marker in the room ``>= seq``): skipped;
3. everything else goes into one e-mail.

:func:`may_have_queued` tells the notifier whether a committed batch is worth
looking at the store for at all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..message import Draft
from ..store import Notification

__all__ = ["Plan", "plan", "may_have_queued"]


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    send: tuple[Notification, ...]
    skip: tuple[Notification, ...]


def plan(pending: Sequence[Notification]) -> Plan:
    """Split one user's pending notifications into those to mail and those to drop."""
    if not pending or not pending[0].email:
        return Plan((), tuple(pending))
    send = tuple(n for n in pending if n.seen_seq is None or n.seen_seq < n.seq)
    skip = tuple(n for n in pending if n not in send)
    return Plan(send, skip)


def may_have_queued(saved: Sequence[Draft]) -> bool:
    """Whether storing ``saved`` may have queued a notification: only a new
    message that mentions someone does (a duplicate was queued the first time)."""
    return any(m.mentions and not m.duplicate for m in saved)
