"""Message events through the queue (``--queue redis://``): a change travels as
a ``process`` entry with its own fields, is checked by the processor as over a
TCP link, stored against its target, and answered (or refused) to the web node
that asked. A real QueueWorker and QueueClient, the machine's Redis, SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from squall.errors import Forbidden, NotFound, Rejected
from squall.handshake import link_key
from squall.message import ChangeRules
from squall.processor.pipeline import Pipeline
from squall.processor.stages import BatchWriter, Render, Validate
from squall.queue.client import QueueClient
from squall.queue.worker import QueueWorker
from squall.store.sqlite import SQLiteStore
from support import REDIS_URL, TIMEOUT, ChatClient, SquallProcess, http, run_async

pytestmark = pytest.mark.redis

KEY = link_key("test secret")


@asynccontextmanager
async def queue_pair(tmp_path: Path, prefix: str) -> AsyncIterator[tuple[QueueClient, list[dict[str, Any]]]]:
    store = SQLiteStore(str(tmp_path / "squall.db"))
    await store.open()
    writer = BatchWriter(store, rules=ChangeRules(edit_window_ms=60_000, max_reactions=1))
    queue = QueueWorker(REDIS_URL, key=KEY, prefix=prefix)
    queue.pipeline = Pipeline([("validate", Validate()), ("render", Render()), ("store", writer.save)])
    await queue.open()
    stop = asyncio.Event()
    running = asyncio.ensure_future(queue.run(stop, shutdown_timeout=TIMEOUT))
    published: list[dict[str, Any]] = []
    client = QueueClient(REDIS_URL, key=KEY, prefix=prefix, on_processed=published.extend)
    client.start()
    try:
        await asyncio.wait_for(client.connected.wait(), TIMEOUT)
        yield client, published
    finally:
        await client.close(timeout=TIMEOUT)
        stop.set()
        await running
        await store.close()


def test_changes_through_the_queue(tmp_path: Path, redis_prefix: str) -> None:
    async def scenario() -> None:
        async with queue_pair(tmp_path, redis_prefix) as (client, published):
            def process(nick: str, cid: str, body: str = "", **event: Any) -> Any:
                return client.process(room="lobby", nick=nick, id=cid, body=body, ts=1000, event=event or None)

            first = await process("alice", "m1", "hello")
            reply = await process("bob", "m2", "hi back", reply_to=1)
            react = await process("bob", "r1", kind="react", target=1, emoji="👍")
            again = await process("bob", "r1", kind="react", target=1, emoji="👍")  # a resend
            with pytest.raises(Rejected) as too_many:
                await process("bob", "r2", kind="react", target=1, emoji="🎉")
            with pytest.raises(Forbidden):
                await process("bob", "e1", "mine now", kind="edit", target=1)
            with pytest.raises(NotFound):
                await process("alice", "e2", "x", kind="edit", target=40)
            edit = await process("alice", "e3", "hello *all*", kind="edit", target=1)
            gone = await process("bob", "d1", kind="delete", target=2)
            moderated = await process("carol", "d2", kind="delete", target=1, moderator=True)

        assert (first["seq"], reply["seq"], react["seq"], again["seq"]) == (1, 2, 3, 3)
        assert reply["reply_snippet"] == {"nick": "alice", "body": "hello"}
        assert react["type"] == "change" and react["message"]["reactions"] == {"👍": ["bob"]}
        assert too_many.value.code == "too_many_reactions"
        assert edit["seq"] == 4 and edit["message"]["html"] == "<p>hello <em>all</em></p>\n"
        assert gone["seq"] == 5 and gone["message"]["deleted"] is True
        assert moderated["seq"] == 6 and moderated["message"]["deleted"] is True
        assert sorted({m["seq"] for m in published}) == [1, 2, 3, 4, 5, 6]

    run_async(scenario())


def test_changes_through_squall_web_and_processor_with_queue(tmp_path: Path, redis_prefix: str) -> None:
    """``squall processor --queue`` and ``squall web --queue`` as real processes:
    an edit and a reaction go through Redis Streams, with the edit_window the
    processor was given, and come back to a member as changes."""
    env = {"SQUALL_QUEUE": REDIS_URL, "SQUALL_QUEUE_PREFIX": redis_prefix, "SQUALL_EDIT_WINDOW": "600"}
    processor = SquallProcess(tmp_path, "processor", env=env)
    processor.start()
    web = SquallProcess(tmp_path, "web", env=env)
    try:
        web.start()
        alice, bob = web.session("alice"), web.session("bob")

        async def scenario() -> list[dict[str, Any]]:
            member = await ChatClient.connect(web.address, bob)
            try:
                await member.join("queued")
                for token, body in (
                    (alice, {"body": "hello", "id": "q1"}),
                    (bob, {"type": "react", "id": "q2", "target": 1, "emoji": "👍"}),
                    (alice, {"type": "edit", "id": "q3", "target": 1, "body": "hello there"}),
                ):
                    response = await http(web.address, "POST", "/api/rooms/queued/messages", token=token, json_body=body)
                    assert response.status == 200, response.body
                forbidden = await http(web.address, "POST", "/api/rooms/queued/messages", token=bob,
                                       json_body={"type": "edit", "id": "q4", "target": 1, "body": "mine"})
                assert forbidden.status == 403 and forbidden.json()["code"] == "forbidden"
                return [await member.recv_until(lambda f: f["type"] in ("message", "change")) for _ in range(3)]
            finally:
                await member.close()

        events = run_async(scenario())
    finally:
        web.stop()
        processor.stop()
    assert [(e["type"], e["seq"]) for e in events] == [("message", 1), ("change", 2), ("change", 3)]
    assert events[2]["message"]["body"] == "hello there" and events[2]["message"]["reactions"] == {"👍": ["bob"]}
