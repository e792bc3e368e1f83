"""Two instances on one machine keep their data apart (issue 10, defect 4).

Both are ``squall run`` with their own data folders and *default* processor
settings. Before the fix both children wanted 127.0.0.1:8889: the second one
crash-looped and the second web node stored its messages in the first
instance's database. Now each parent binds a private port for its child, and
the link's handshake (each instance has its own secret) keeps any web node from
talking to another instance's processor.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from support import SquallProcess, http, run_async, squall_server


def stored_bodies(data_dir: Path) -> list[str]:
    with sqlite3.connect(data_dir / "squall.db") as db:
        return [row[0] for row in db.execute("SELECT body FROM messages ORDER BY room, seq")]


def test_two_instances_with_default_processor_settings_keep_their_own_data(tmp_path: Path) -> None:
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    with squall_server(first_dir) as first, squall_server(second_dir) as second:

        async def post(instance: SquallProcess, body: str) -> None:
            token = instance.session("alice")
            response = await http(instance.address, "POST", "/api/rooms/lobby/messages",
                                  token=token, json_body={"id": body, "body": body})
            assert response.status == 200, (response.status, response.body)

        async def scenario() -> None:
            for n in range(5):
                await post(first, f"first-{n}")
                await post(second, f"second-{n}")

        run_async(scenario())
        first_child = first.processor_child().net_connections(kind="tcp")
        second_child = second.processor_child().net_connections(kind="tcp")
    assert stored_bodies(first_dir) == [f"first-{n}" for n in range(5)]
    assert stored_bodies(second_dir) == [f"second-{n}" for n in range(5)]
    listening = {c.laddr.port for c in first_child if c.status == "LISTEN"}
    assert listening and listening.isdisjoint({c.laddr.port for c in second_child if c.status == "LISTEN"})
