"""E-mail to users who were mentioned while away.

Theory of operation. The store stage queues a pending notification for every
new mention of a user with an e-mail address, in the same transaction as the
message, due ``notify_delay`` after it. Web nodes report, over the link, each
time a user is handed a message that mentions them (``seen``); those reports
raise the user's read marker for the room.

The :class:`Notifier` wakes when the earliest notification falls due (or when
a mention is stored, or a read marker moves). For each user with a due
notification it claims *all* of that user's pending ones — the mentions that
piled up — drops those the user has seen, and sends one e-mail for the rest.
Only after the deliverer accepted it are the notifications marked sent, so a
processor restart neither loses one (it is in the store) nor, short of a crash
in the middle of a delivery, repeats one. A delivery failure postpones them
with capped exponential back-off.

Every processor runs a notifier, and they may share one store. The claim keeps
them apart: a claimed notification is nobody else's until the claim runs out
(:data:`~squall.store.NOTIFICATION_CLAIM_MS`), and a delivery is given at most
half of that, so a claim never runs out while its e-mail is being sent. A
notifier that dies holding a claim leaves its notifications to the others once
the claim has run out.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import random
import time
from collections.abc import Sequence

from ..backoff import backoff_delay
from ..message import Draft
from ..pipeline.mail import Deliverer, PendingMention, compose
from ..pipeline.notify import may_have_queued, plan
from ..store import NOTIFICATION_CLAIM_MS, Notification, Store

__all__ = ["Notifier"]

log = logging.getLogger("squall.notify")

# Longest the notifier sleeps without checking the store, in case a clock jumped.
MAX_IDLE_SECONDS = 60.0
USERS_PER_ROUND = 100
DELIVERY_TIMEOUT = NOTIFICATION_CLAIM_MS / 1000 / 2  # seconds one e-mail delivery may take


def _now_ms() -> int:
    return int(time.time() * 1000)


class Notifier:
    def __init__(
        self,
        store: Store,
        deliverer: Deliverer,
        *,
        base_url: str,
        mail_from: str,
        retry_min: float = 10.0,
        retry_max: float = 3600.0,
    ) -> None:
        self.store = store
        self.deliverer = deliverer
        self.base_url = base_url
        self.mail_from = mail_from
        self.retry_min = retry_min
        self.retry_max = retry_max
        self._wake = asyncio.Event()
        self._seen: dict[tuple[str, str], int] = {}
        self.sent = 0  # e-mails handed to the deliverer, for logs and tests

    def stored(self, messages: Sequence[Draft]) -> None:
        """A batch was committed: look at the store again if it may have queued a notification.

        Most messages mention nobody, and looking at the store after each of
        them would compete for the CPU with the web node's fan-out.
        """
        if may_have_queued(messages):
            self._wake.set()

    def seen(self, key: str, room: str, seq: int) -> None:
        """A user was handed message ``seq`` of ``room``; written on the next round."""
        if seq > self._seen.get((key, room), 0):
            self._seen[(key, room)] = seq
            self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            # Cleared before reading the store, not after: a wake-up that comes
            # while this round reads must wake the next wait, not be lost.
            self._wake.clear()
            try:
                await self._flush_seen()
                await self._round()
                timeout = await self._until_next_due()
            except Exception:
                log.exception("notification round failed")
                timeout = self.retry_min
            waiter = asyncio.ensure_future(self._wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
        await self._flush_seen()

    async def _flush_seen(self) -> None:
        if self._seen:
            marks = [(key, room, seq) for (key, room), seq in self._seen.items()]
            self._seen.clear()
            await self.store.mark_seen(marks)

    async def _until_next_due(self) -> float:
        due = await self.store.next_notification_due()
        if due is None:
            return MAX_IDLE_SECONDS
        return min(MAX_IDLE_SECONDS, max(0.0, (due - _now_ms()) / 1000))

    async def _round(self) -> None:
        due = await self.store.due_notifications(_now_ms(), USERS_PER_ROUND)
        users = list(dict.fromkeys(n.nick_key for n in due))
        for key in users:
            now = _now_ms()
            claimed = await self.store.claim_notifications(key, now_ms=now, until_ms=now + NOTIFICATION_CLAIM_MS)
            if claimed:
                await self._notify_user(claimed)

    async def _notify_user(self, pending: list[Notification]) -> None:
        decided = plan(pending)
        if decided.skip:
            await self.store.finish_notifications([n.id for n in decided.skip], "skipped")
        unseen = decided.send
        if not unseen:
            return
        user = unseen[0]
        assert user.email is not None
        message = compose(
            to=user.email,
            nick=user.nick,
            mentions=[
                PendingMention(str(n.id), n.room, n.sender, n.body, n.ts, n.seq) for n in unseen
            ],
            sender=self.mail_from,
            base_url=self.base_url,
            now=datetime.datetime.now(datetime.UTC),
        )
        key = f"mention-{user.nick_key}-{min(n.id for n in unseen)}-{max(n.id for n in unseen)}"
        try:
            # Bounded well inside the claim: past it another notifier could send it too.
            await asyncio.wait_for(self.deliverer.deliver(message, key=key), DELIVERY_TIMEOUT)
        except Exception as exc:
            attempt = max(n.attempts for n in unseen) + 1
            delay = backoff_delay(attempt - 1, low=self.retry_min, high=self.retry_max, rand=random.random())
            log.warning("e-mail to %s failed (%s); retry %d in %.1f s", user.nick, exc, attempt, delay)
            await self.store.postpone_notifications([n.id for n in unseen], _now_ms() + int(delay * 1000))
            return
        await self.store.finish_notifications([n.id for n in unseen], "sent")
        self.sent += 1
        log.info("e-mailed %s about %d mention(s)", user.nick, len(unseen))

