"""The built-in stages: validate, render, mentions, store."""

from __future__ import annotations

import asyncio
import dataclasses
import html
import re
import unicodedata

from ..errors import Rejected
from ..message import Draft
from ..protocol import nick_key
from ..store import Store

__all__ = ["Validate", "render", "Mentions", "BatchWriter", "URL_PATTERN"]

# Newline and tab are the only control characters a chat line may carry.
_ALLOWED_CONTROLS = frozenset("\n\t")

URL_PATTERN = re.compile(r"\bhttps?://[^\s<>\"'`]+[^\s<>\"'`.,;:!?)\]}]", re.IGNORECASE)
_MENTION = re.compile(r"(?<![\w@./:+-])@([\w.-]{1,32})")


class Validate:
    """Trims the body and refuses empty, overlong or control-character bodies."""

    def __init__(self, *, max_chars: int = 4000) -> None:
        self.max_chars = max_chars

    def __call__(self, message: Draft) -> Draft:
        body = message.body.strip()
        if not body:
            raise Rejected("message body is empty", code="empty_body")
        if len(body) > self.max_chars:
            raise Rejected(
                f"message body has {len(body)} characters, more than the limit of {self.max_chars}",
                code="body_too_long",
            )
        for position, char in enumerate(body):
            if char not in _ALLOWED_CONTROLS and unicodedata.category(char) == "Cc":
                raise Rejected(
                    f"message body has control character U+{ord(char):04X} at position {position};"
                    " only newline and tab are allowed",
                    code="bad_body",
                )
        return dataclasses.replace(message, body=body) if body != message.body else message


def render(message: Draft) -> Draft:
    """Escape the body for a page and link its URLs; fill ``links``."""
    parts: list[str] = []
    links: list[str] = []
    position = 0
    for match in URL_PATTERN.finditer(message.body):
        url = match.group(0)
        parts.append(html.escape(message.body[position:match.start()]))
        escaped = html.escape(url)
        parts.append(
            f'<a href="{escaped}" rel="nofollow noopener noreferrer" target="_blank">{escaped}</a>'
        )
        if url not in links:
            links.append(url)
        position = match.end()
    parts.append(html.escape(message.body[position:]))
    return dataclasses.replace(message, html="".join(parts), links=tuple(links))


class Mentions:
    """Finds ``@nick`` for users the server knows."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def __call__(self, message: Draft) -> Draft:
        body_without_urls = URL_PATTERN.sub(" ", message.body)
        candidates = {nick_key(m.rstrip(".-")) for m in _MENTION.findall(body_without_urls)}
        if not candidates:
            return message
        known = await self.store.find_users(candidates)
        mentions = tuple(sorted(set(known.values()), key=str.casefold))
        return dataclasses.replace(message, mentions=mentions)


class BatchWriter:
    """Stores messages in batches: everything that arrives while one transaction
    runs goes into the next one (group commit). Each caller gets its own message
    back only after the transaction that holds it has committed."""

    def __init__(self, store: Store, *, max_batch: int = 512) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: list[tuple[Draft, asyncio.Future[Draft]]] = []
        self._running = False

    async def save(self, message: Draft) -> Draft:
        future: asyncio.Future[Draft] = asyncio.get_running_loop().create_future()
        self._queue.append((message, future))
        if not self._running:
            self._running = True
            asyncio.ensure_future(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                try:
                    saved = await self.store.save_messages([message for message, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), message in zip(batch, saved):
                    if not future.done():
                        future.set_result(message)
        finally:
            self._running = False
