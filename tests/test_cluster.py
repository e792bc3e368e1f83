"""``squall cluster``: several web nodes and processors from one command.

Over TCP links with the Redis bus, tests/test_nginx.py runs it behind nginx; here:
its refusals, and the queue mode (processors that listen nowhere).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from support import TIMEOUT, ChatClient, SquallProcess, run_async


@pytest.mark.parametrize(("args", "says"), [
    (("--web", "2", "--processors", "1"), "set --bus redis://HOST:PORT"),
    (("--web", "0"), "--web 0: run 1 to 16 web nodes"),
    (("--web", "1", "--processors", "17"), "--processors 17: run 1 to 16 processors"),
])
def test_a_cluster_that_cannot_work_is_refused_in_one_line(tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "squall", "cluster", "--data-dir", str(tmp_path), *args],
        capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr


@pytest.mark.redis
def test_a_queue_cluster_stores_every_message_once(tmp_path: Path, redis_prefix: str, room: str) -> None:
    cluster = SquallProcess(
        tmp_path, "cluster", args=("--web", "1", "--processors", "2", "--port", "0"),
        env={"SQUALL_QUEUE": "redis://127.0.0.1:6379/0", "SQUALL_QUEUE_PREFIX": redis_prefix},
    )
    cluster.start()
    try:
        assert cluster.process is not None
        children = psutil.Process(cluster.process.pid).children()
        processors = [c for c in children if "processor" in c.cmdline()]
        assert len(processors) == 2 and len(children) == 3, [c.cmdline() for c in children]
        # Through the queue, processors dial Redis: they listen nowhere.
        for child in processors:
            assert not [c for c in child.net_connections("tcp") if c.status == psutil.CONN_LISTEN]
        status, health = cluster.api("GET", "/api/health")
        assert status == 200 and health["processors"][0]["state"] == "connected", health

        token = cluster.session("queued")

        async def scenario() -> list[int]:
            client = await ChatClient.connect(cluster.address, token)
            try:
                assert (await client.join(room))["type"] == "joined"
                seqs = []
                for number in range(1, 11):
                    for _ in range(2):  # each sent twice with one id: stored once
                        await client.send_json({"type": "send", "room": room, "id": f"q{number}", "body": f"#{number}"})
                        ack = await client.recv_until(
                            lambda f: f.get("id") == f"q{number}" and f.get("type") in ("ack", "error"))
                        assert ack["type"] == "ack", ack
                    seqs.append(ack["seq"])
                return seqs
            finally:
                await client.close()

        assert run_async(scenario()) == list(range(1, 11))
        assert [m["seq"] for m in cluster.history(room, token)] == list(range(1, 11))
    finally:
        cluster.stop()
