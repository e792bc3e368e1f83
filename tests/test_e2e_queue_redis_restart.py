"""The queue's Redis restarted under a web node and a processor (``--queue``).

The test owns its Redis (the ``own_redis`` fixture: ``redis-server`` on a free
port, keeping nothing on disk, as the machine's does), never the shared one. Across the restart the
stream, the group and the reply stream are gone: the processor creates the
group again, the web node's scripts are loaded again, and the reply stream
starts anew. A send caught by the restart gets ``unavailable`` and its retry
(same id) is stored once; a watcher sees 1..N in order.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from support import TIMEOUT, ChatClient, RedisServer, SquallProcess, run_async

pytestmark = pytest.mark.redis

BEFORE, AFTER = 10, 10
ENV = {"SQUALL_SEND_TIMEOUT": "2", "SQUALL_RECONNECT_MAX": "0.2", "SQUALL_QUEUE_PREFIX": "restart"}


def post_until_stored(web: SquallProcess, token: str, cid: str, refusals: list[str]) -> int:
    """POST a message until it is stored; counts each ``unavailable`` (bounded by TIMEOUT)."""
    deadline = time.monotonic() + 4 * TIMEOUT
    while True:
        status, body = web.api("POST", "/api/rooms/lobby/messages", {"body": f"body of {cid}", "id": cid},
                               token=token)
        if status == 200:
            return int(body["seq"])
        assert (status, body["code"]) == (503, "unavailable"), (status, body)
        refusals.append(cid)
        assert time.monotonic() < deadline, f"{cid} never stored"


def test_redis_restart_under_the_queue(tmp_path: Path, own_redis: RedisServer) -> None:
    env = {**ENV, "SQUALL_QUEUE": f"redis://127.0.0.1:{own_redis.port}/0"}
    processor = SquallProcess(tmp_path, "processor", env=env)
    processor.start()
    web = SquallProcess(tmp_path, "web", env=env)
    try:
        web.start()
        token, watcher_token = web.session("alice"), web.session("watcher")

        async def scenario() -> tuple[list[int], list[str], list[int]]:
            watcher = await ChatClient.connect(web.address, watcher_token)
            await watcher.join("lobby")
            refusals: list[str] = []
            seqs = [await asyncio.to_thread(post_until_stored, web, token, f"m{n}", refusals)
                    for n in range(1, BEFORE + 1)]
            # The rest at once, each in its own thread, while Redis restarts
            # under them: some are caught in flight.
            loop = asyncio.get_running_loop()
            with ThreadPoolExecutor(max_workers=AFTER) as threads:
                later = [loop.run_in_executor(threads, post_until_stored, web, token, f"m{n}", refusals)
                         for n in range(BEFORE + 1, BEFORE + AFTER + 1)]
                own_redis.stop()
                own_redis.start()  # empty: stream, group and reply stream are gone
                seqs += sorted(await asyncio.gather(*later))
            seen = [(await watcher.recv_type("message"))["seq"] for _ in range(BEFORE + AFTER)]
            await watcher.ping()  # nothing more came: no duplicate
            await watcher.close()
            return seqs, refusals, seen

        seqs, refusals, seen = run_async(scenario())
        history = web.history("lobby", token)
    finally:
        web.stop()
        processor.stop()
    total = BEFORE + AFTER
    assert seqs == list(range(1, total + 1)), seqs
    assert [m["id"] for m in history[:BEFORE]] == [f"m{n}" for n in range(1, BEFORE + 1)]
    assert sorted(m["id"] for m in history) == sorted(f"m{n}" for n in range(1, total + 1))
    assert [m["seq"] for m in history] == list(range(1, total + 1))
    assert seen == list(range(1, total + 1))
    assert all(cid in {f"m{n}" for n in range(BEFORE + 1, total + 1)} for cid in refusals), refusals
    assert "created it again" in processor.output(), processor.output()
