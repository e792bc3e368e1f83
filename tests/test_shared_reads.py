"""squall/history.py on a real SQLite store: pages read once, and never a stale one."""

from __future__ import annotations

import asyncio
from pathlib import Path

from support import run_async

from squall.history import SharedReads
from squall.hub import broadcast_from_draft
from squall.message import Draft
from squall.store.sqlite import SQLiteStore


def _drafts(room: str, first: int, count: int) -> list[Draft]:
    return [Draft(room=room, nick="ann", id=f"c{n}", body=f"#{n}", ts=1) for n in range(first, first + count)]


def test_a_short_page_is_never_served_after_its_room_grew(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[int], list[int], int]:
        store = SQLiteStore(str(tmp_path / "squall.db"))
        await store.open()
        try:
            reads = SharedReads(store, broadcast_from_draft)
            await store.save_messages(_drafts("r", 0, 3))
            before = [b.seq or 0 for b in await reads.after("r", 0, 10)]
            await store.save_messages(_drafts("r", 3, 2))  # committed after that read
            after = [b.seq or 0 for b in await reads.after("r", 0, 10)]
            return before, after, reads.reads
        finally:
            await store.close()

    before, after, store_reads = run_async(scenario())
    assert before == [1, 2, 3]
    assert after == [1, 2, 3, 4, 5]  # a cached short page would say [1, 2, 3]
    assert store_reads == 2


def test_full_pages_are_read_once_and_concurrent_readers_share_a_read(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[list[int]], list[int], int]:
        store = SQLiteStore(str(tmp_path / "squall.db"))
        await store.open()
        try:
            reads = SharedReads(store, broadcast_from_draft)
            await store.save_messages(_drafts("r", 0, 6))
            pages = await asyncio.gather(*(reads.after("r", 1, 3) for _ in range(50)))
            await store.save_messages(_drafts("r", 6, 1))
            again = await reads.after("r", 1, 3)  # full: cached, and still exact
            short = await asyncio.gather(*(reads.after("r", 4, 10) for _ in range(20)))
            assert all(page is short[0] for page in short)  # one flight for the short page
            return [[b.seq or 0 for b in p] for p in pages], [b.seq or 0 for b in again], reads.reads
        finally:
            await store.close()

    pages, again, store_reads = run_async(scenario())
    assert all(page == [2, 3, 4] for page in pages) and again == [2, 3, 4]
    assert store_reads == 2  # the full page once, the short page once for its 20 readers
