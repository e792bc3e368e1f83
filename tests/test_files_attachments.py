"""Messages that carry files: ``send`` with ``attachments`` over WebSocket and
HTTP, delivered on WebSocket, SSE, long-poll and history, stored by both
stores; someone else's file or a malformed list is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from files_support import fetch, image_bytes, uploaded
from squall.files import FileRecord
from squall.store import open_store
from support import ChatClient, EventStream, SquallProcess, http, run_async, squall_server


def test_attachments_arrive_on_every_transport_and_in_history(tmp_path: Path, store_url: str) -> None:
    with squall_server(tmp_path, env={"SQUALL_DATABASE": store_url}) as server:
        alice, bob = server.session("alice"), server.session("bob")
        room = "pictures"

        async def scenario() -> None:
            picture = await uploaded(server.address, alice, image_bytes((120, 90)), name="cat.png")
            paper = await uploaded(server.address, alice, b"%PDF-1.4\n" + b"x" * 100, name="paper.pdf")
            expected = [picture, paper]
            for item in expected:
                item.pop("sha256")
            watcher = await ChatClient.connect(server.address, bob)
            sender = await ChatClient.connect(server.address, alice)
            stream = await EventStream.open(server.address, room, bob, since=0)
            try:
                assert (await watcher.join(room))["type"] == "joined"
                # Over WebSocket, with an empty body.
                await sender.send_json({"type": "send", "room": room, "id": "w1", "body": "",
                                        "attachments": [picture["id"], paper["id"]]})
                ack = await sender.recv_until(lambda f: f.get("id") == "w1")
                assert ack["type"] == "ack", ack
                live = await watcher.recv_type("message")
                assert live["body"] == "" and live["attachments"] == expected
                sse = await stream.next_of("message")
                assert sse.json()["attachments"] == expected
                # Over HTTP, with text.
                sent = await http(server.address, "POST", f"/api/rooms/{room}/messages", token=alice,
                                  json_body={"body": "the cat again", "id": "h1", "attachments": [picture["id"]]})
                assert sent.status == 200, sent.body
                live = await watcher.recv_type("message")
                assert live["body"] == "the cat again" and live["attachments"] == [picture]
                # Long-poll and history carry them as stored.
                poll = await http(server.address, "GET", f"/api/rooms/{room}/messages?since=0&wait=0", token=bob)
                messages = json.loads(poll.body)["messages"]
                assert [m.get("attachments") for m in messages] == [expected, [picture]]
                # A reader of the room may fetch what was posted to it.
                assert (await fetch(server.address, bob, picture["url"])).status == 200
                assert (await fetch(server.address, bob, paper["url"])).status == 200
            finally:
                await watcher.close()
                await sender.close()
                await stream.close()

        run_async(scenario())


def test_someone_elses_file_is_refused(tmp_path: Path) -> None:
    with squall_server(tmp_path) as server:
        alice, mallory = server.session("alice"), server.session("mallory")

        async def scenario() -> None:
            secret = await uploaded(server.address, alice, image_bytes(color="black"), name="secret.png")
            client = await ChatClient.connect(server.address, mallory)
            try:
                await client.send_json({"type": "send", "room": "r", "id": "m1", "body": "look",
                                        "attachments": [secret["id"]]})
                error = await client.recv_until(lambda f: f.get("id") == "m1")
                assert error["type"] == "error" and error["code"] == "bad_attachment", error
                # A made-up id the same way; and a malformed list before any lookup.
                await client.send_json({"type": "send", "room": "r", "id": "m2", "body": "x",
                                        "attachments": ["f_" + "A" * 22]})
                assert (await client.recv_until(lambda f: f.get("id") == "m2"))["code"] == "bad_attachment"
                for bad in ("f_1", 7, ["nested"]):
                    await client.send_json({"type": "send", "room": "r", "id": "m3", "body": "x",
                                            "attachments": [bad]})
                    assert (await client.recv_until(lambda f: f.get("id") == "m3"))["code"] == "bad_attachment"
                await client.send_json({"type": "send", "room": "r", "id": "m4", "body": "x",
                                        "attachments": [secret["id"]] * 9})
                assert (await client.recv_until(lambda f: f.get("id") == "m4"))["code"] == "bad_attachment"
            finally:
                await client.close()
            response = await http(server.address, "POST", "/api/rooms/r/messages", token=mallory,
                                  json_body={"body": "", "id": "h1", "attachments": [secret["id"]]})
            assert response.status == 422 and json.loads(response.body)["code"] == "bad_attachment"
            # Nothing was posted, so the file is still alice's alone.
            assert (await fetch(server.address, mallory, secret["url"])).status == 404
            # An empty body without attachments is still empty.
            response = await http(server.address, "POST", "/api/rooms/r/messages", token=alice,
                                  json_body={"body": " ", "id": "h2", "attachments": []})
            assert response.status == 422 and json.loads(response.body)["code"] == "empty_body"

        run_async(scenario())
        assert server.history("r", alice) == []


def test_the_files_table_in_each_store(store_url: str) -> None:
    async def scenario() -> None:
        store = open_store(store_url)
        await store.open()
        try:
            record = FileRecord(id="f_" + "a" * 22, owner="ann", sha256="1" * 64, ext="png", size=10,
                                type="image/png", name="one.png", created=5, width=3, height=4, thumb="png")
            assert await store.save_file(record) == record
            # The same content again by the same owner: the row they have, renamed.
            again = await store.save_file(FileRecord(**{**_fields(record), "id": "f_" + "b" * 22, "name": "two.png"}))
            assert again.id == record.id and again.name == "two.png"
            other = FileRecord(**{**_fields(record), "id": "f_" + "c" * 22, "owner": "bob", "size": 7})
            await store.save_file(other)
            assert await store.upload_bytes("ann") == 10 and await store.upload_bytes("bob") == 7
            assert await store.upload_bytes("nobody") == 0
            assert [f.id for f in await store.files_of("ann", [record.id, other.id])] == [record.id]
            owners, rooms = await store.file_access("1" * 64)
            assert sorted(owners) == ["ann", "bob"] and rooms == []
            await store.share_files("lobby", ["1" * 64, "1" * 64])
            await store.share_files("lobby", ["1" * 64])
            assert (await store.file_access("1" * 64))[1] == ["lobby"]
        finally:
            await store.close()

    run_async(scenario())


def _fields(record: FileRecord) -> dict[str, object]:
    return {name: getattr(record, name) for name in FileRecord.__slots__}  # type: ignore[attr-defined]


@pytest.mark.redis
def test_attachments_pass_through_the_queue(tmp_path: Path, redis_prefix: str) -> None:
    cluster = SquallProcess(
        tmp_path, "cluster", args=("--web", "1", "--processors", "1", "--port", "0"),
        env={"SQUALL_QUEUE": "redis://127.0.0.1:6379/0", "SQUALL_QUEUE_PREFIX": redis_prefix},
    )
    cluster.start()
    try:
        token = cluster.session("queued")

        async def scenario() -> dict[str, object]:
            picture = await uploaded(cluster.address, token, image_bytes(), name="q.png")
            picture.pop("sha256")
            client = await ChatClient.connect(cluster.address, token)
            try:
                await client.send_json({"type": "send", "room": "queued", "id": "q1", "body": "",
                                        "attachments": [picture["id"]]})
                ack = await client.recv_until(lambda f: f.get("id") == "q1")
                assert ack["type"] == "ack", ack
            finally:
                await client.close()
            return picture

        picture = run_async(scenario())
        assert [m.get("attachments") for m in cluster.history("queued", token)] == [[picture]]
    finally:
        cluster.stop()
