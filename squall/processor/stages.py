"""The built-in stages, in their usual order:

``validate`` → ``filter`` → ``render`` → ``mentions`` → ``store`` → ``previews``.

Filtering comes before rendering so the html is made from the masked body;
mentions are found on the rendered html, so code and links are never searched;
previews come after the store, because they are fetched once the message is
safe, and arrive later as an ``update``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError, FilterFileError, Rejected, StoreUnavailable
from ..message import ChangeRules, Draft
from ..metrics import ProcessorMetrics
from ..pipeline.filter import Action, FilterFile
from ..pipeline.mentions import find_mentions, mark_mentions
from ..pipeline.preview import AllowList, PreviewFetcher
from ..pipeline.richtext import Renderer
from ..store import Store

__all__ = ["Validate", "Filter", "Render", "Mentions", "Previews", "BatchWriter"]

log = logging.getLogger("squall.pipeline")

# Unicode category Cc (C0, DEL, C1) except newline and tab, the only control
# characters a chat line may carry.
_FORBIDDEN_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Most users an @room mention lists.
MAX_ROOM_MENTIONS = 1000
# Canonical nicks the mentions stage remembers.
KNOWN_USERS_CACHED = 10_000
UNKNOWN_USER_SECONDS = 2.0


class Validate:
    """Trims the body and refuses empty (unless the message carries files),
    overlong or control-character bodies."""

    def __init__(self, *, max_chars: int = 4000) -> None:
        self.max_chars = max_chars

    def __call__(self, message: Draft) -> Draft:
        body = message.body.strip()
        if not body and not message.attachments:
            raise Rejected("message body is empty (and it carries no attachments)", code="empty_body")
        if len(body) > self.max_chars:
            raise Rejected(
                f"message body has {len(body)} characters, more than the limit of {self.max_chars}",
                code="body_too_long",
            )
        control = _FORBIDDEN_CONTROL.search(body)
        if control is not None:
            raise Rejected(
                f"message body has control character U+{ord(control.group()):04X} at position"
                f" {control.start()}; only newline and tab are allowed",
                code="bad_body",
            )
        return dataclasses.replace(message, body=body) if body != message.body else message


class Filter:
    """Masks or refuses listed terms (``filter_file``); does nothing without a file."""

    def __init__(self, path: str, *, default_action: str = "mask") -> None:
        self.file: FilterFile | None = None
        if path:
            try:
                self.file = FilterFile(path, default_action=Action(default_action))
            except FilterFileError as exc:
                raise ConfigError(str(exc)) from None

    def reload(self) -> None:
        """Re-read the file now (SIGHUP)."""
        if self.file is not None:
            self.file.refresh(force=True)

    def __call__(self, message: Draft) -> Draft:
        if self.file is None:
            return message
        self.file.refresh(now=time.monotonic())
        body = self.file.filter.apply(message.body)
        return dataclasses.replace(message, body=body) if body != message.body else message


class Render:
    """Renders the body's Markdown subset to safe html and lists its links."""

    def __init__(self) -> None:
        self.renderer = Renderer()

    def __call__(self, message: Draft) -> Draft:
        rendered = self.renderer.render(message.body)
        return dataclasses.replace(message, html=rendered.html, links=rendered.links)


class Mentions:
    """Resolves ``@nick`` against known users and marks them in the html.

    Users known once stay known with the same spelling, so hits are cached
    (up to ``KNOWN_USERS_CACHED``): a chatty room's mentions then cost no
    store round trip. A name that is no user is remembered for only
    ``UNKNOWN_USER_SECONDS``, since someone may sign in with it any moment.
    """

    def __init__(self, store: Store, *, allow_room: bool = True) -> None:
        self.store = store
        self.allow_room = allow_room
        self._known: dict[str, str] = {}
        self._unknown: dict[str, float] = {}  # key → when to ask the store again

    async def _resolve(self, keys: tuple[str, ...], *, now: float) -> dict[str, str]:
        known, unknown = self._known, self._unknown
        resolved = {key: known[key] for key in keys if key in known}
        missing = [k for k in keys if k not in resolved and unknown.get(k, 0.0) <= now]
        if missing:
            found = await self.store.find_users(missing)
            for cache in (known, unknown):
                if len(cache) + len(missing) > KNOWN_USERS_CACHED:
                    cache.clear()
            known.update(found)
            resolved.update(found)
            for key in missing:
                if key not in found:
                    unknown[key] = now + UNKNOWN_USER_SECONDS
        return resolved

    async def __call__(self, message: Draft) -> Draft:
        candidates = find_mentions(message.html, allow_room=self.allow_room)
        if not candidates.keys and not candidates.room:
            return message
        resolved = (
            await self._resolve(candidates.keys, now=time.monotonic()) if candidates.keys else {}
        )
        members = None
        if candidates.room:
            members = await self.store.room_posters(message.room, MAX_ROOM_MENTIONS)
        marked = mark_mentions(
            message.html, resolved, allow_room=self.allow_room, room_members=members
        )
        return dataclasses.replace(message, html=marked.html, mentions=marked.mentions)


class Previews:
    """Fetches link previews after the message is stored, without holding it up.

    The results are stored with the message and sent to every web node as an
    unasked ``updated`` line, which becomes an ``update`` event in the room.
    """

    def __init__(
        self,
        store: Store,
        fetcher: PreviewFetcher,
        send_update: Callable[[dict[str, Any]], None],
    ) -> None:
        self.store = store
        self.fetcher = fetcher
        self.send_update = send_update
        self.tasks: set[asyncio.Task[None]] = set()

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.fetcher.close()

    def __call__(self, message: Draft) -> Draft:
        # An edit's links are previewed again: stored with the message it
        # edited, and announced with the edit's own seq and that `target`, so
        # that each update names a seq of its own (web nodes pass on one per seq).
        links = message.state.links if message.kind == "edit" and message.state else message.links
        if links and not message.duplicate and message.seq is not None and message.kind in ("message", "edit"):
            task = asyncio.ensure_future(self._fetch(message.room, message.seq, links, message.target))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return message

    async def _fetch(self, room: str, seq: int, links: tuple[str, ...], target: int | None = None) -> None:
        results = await asyncio.gather(*(self.fetcher.fetch(url) for url in links))
        previews = [p.to_wire() for p in results if p is not None]
        if not previews:
            return
        try:
            await self.store.save_previews(room, target if target is not None else seq, previews)
        except Exception:
            log.exception("could not store previews for %s/%d", room, seq)
            return
        update: dict[str, Any] = {"op": "updated", "room": room, "seq": seq, "links": previews}
        if target is not None:
            update["target"] = target
        self.send_update(update)


def make_fetcher(*, allow: tuple[str, ...], timeout: float, max_bytes: int, concurrency: int) -> PreviewFetcher:
    return PreviewFetcher(
        allow=AllowList.parse(allow), timeout=timeout, max_bytes=max_bytes,
        max_concurrent=concurrency,
    )


class BatchWriter:
    """Stores messages in batches: everything that arrives while one transaction
    runs goes into the next one (group commit). Each caller gets its own message
    back only after the transaction that holds it has committed. A batch that
    fails is stored again one message at a time, so that only a message that
    fails alone is refused (its caller gets the exception). Each transaction is
    timed into ``metrics`` (``squall_store_commit_seconds``), if given."""

    def __init__(
        self, store: Store, *, max_batch: int = 512, notify_delay_ms: int | None = None,
        on_commit: Callable[[list[Draft]], None] | None = None, metrics: ProcessorMetrics | None = None,
        rules: ChangeRules = ChangeRules(),
    ) -> None:
        self.store = store
        self.rules = rules
        self.max_batch = max_batch
        self.notify_delay_ms = notify_delay_ms
        self.on_commit = on_commit
        self.metrics = metrics
        self._queue: list[tuple[Draft, asyncio.Future[Draft]]] = []
        self._running = False

    async def save(self, message: Draft) -> Draft:
        """``message`` as stored (with its seq), once committed; :class:`Rejected`
        for a change or reply the store refused (no such target, not allowed)."""
        future: asyncio.Future[Draft] = asyncio.get_running_loop().create_future()
        self._queue.append((message, future))
        if not self._running:
            self._running = True
            asyncio.ensure_future(self._drain())
        saved = await future
        if saved.refusal is not None:
            raise Rejected(saved.refusal[1], code=saved.refusal[0])
        return saved

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                try:
                    saved = await self._commit([message for message, _ in batch])
                except StoreUnavailable as exc:
                    # No message is to blame: each sender gets `unavailable` and may retry.
                    log.warning("storing %d messages failed: the database is unavailable", len(batch))
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                except Exception as exc:
                    if len(batch) == 1:
                        self._fail(batch[0], exc)
                        continue
                    # One bad message must not cost the others: store each
                    # alone, so that only the one that fails is refused.
                    log.warning("storing %d messages failed (%s: %s); storing them one by one",
                                len(batch), type(exc).__name__, exc)
                    await self._save_one_by_one(batch)
                    continue
                self._committed(batch, saved)
        finally:
            self._running = False

    async def _save_one_by_one(self, batch: list[tuple[Draft, asyncio.Future[Draft]]]) -> None:
        for item in batch:
            try:
                saved = await self._commit([item[0]])
            except Exception as exc:
                self._fail(item, exc)
            else:
                self._committed([item], saved)

    async def _commit(self, drafts: list[Draft]) -> list[Draft]:
        """One transaction: ``drafts`` as stored."""
        started = time.perf_counter()
        try:
            saved = await self.store.save_messages(drafts, notify_delay_ms=self.notify_delay_ms, rules=self.rules)
        except Exception:
            if self.metrics is not None:
                self.metrics.failed_commits.inc()
            raise
        if self.metrics is not None:
            self.metrics.store_commit_seconds.observe(time.perf_counter() - started)
            self.metrics.stored_messages.inc(
                sum(not message.duplicate and message.refusal is None for message in saved)
            )
        return saved

    def _committed(self, batch: list[tuple[Draft, asyncio.Future[Draft]]], saved: list[Draft]) -> None:
        for (_, future), message in zip(batch, saved):
            if not future.done():
                future.set_result(message)
        if self.on_commit is not None:
            self.on_commit(saved)

    @staticmethod
    def _fail(item: tuple[Draft, asyncio.Future[Draft]], exc: Exception) -> None:
        message, future = item
        log.error("storing message %s/%s failed", message.room, message.id, exc_info=exc)
        if not future.done():
            future.set_exception(exc)
