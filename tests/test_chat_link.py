"""``squall chat``'s connection (squall/chat/net.py) against a real ``squall run``,
without a terminal: session, history reads, and a new session after close 4001."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable

import pytest

from squall.chat.net import Link, SessionError, fetch_older, open_session
from squall.chat.state import ChatState, ConnectionState
from support import TIMEOUT, SquallProcess, run_async

_names = itertools.count(1)


def nick(base: str) -> str:
    return f"{base}{os.getpid() % 1000}l{next(_names)}"


async def until(check: Callable[[], bool], changed: asyncio.Event, timeout: float = TIMEOUT) -> None:
    """Wait until ``check()`` holds, looking again each time the link reports a change."""
    async def wait() -> None:
        while not check():
            await changed.wait()
            changed.clear()

    await asyncio.wait_for(wait(), timeout)


def test_sessions_and_their_refusals(server: SquallProcess) -> None:
    url = f"http://127.0.0.1:{server.port}"
    name = nick("gina")

    async def scenario() -> None:
        session = await open_session(url, name)
        assert (session.nick, session.registered) == (name, False)
        with pytest.raises(SessionError) as refused:
            await open_session(url, "bad nick!")
        assert refused.value.code == "bad_nick"
        with pytest.raises(SessionError) as unreachable:
            await open_session("http://127.0.0.1:9", name)
        assert unreachable.value.code == "network"

    run_async(scenario())


def test_history_pages_come_oldest_first(server: SquallProcess, room: str) -> None:
    url = f"http://127.0.0.1:{server.port}"
    token = server.session(nick("hal"))
    for index in range(1, 8):
        assert server.api("POST", f"/api/rooms/{room}/messages", {"body": f"h{index}", "id": f"h{index}"}, token=token)[0] == 200

    async def scenario() -> None:
        page = await fetch_older(url, token, room, 6, limit=3)
        assert [m["seq"] for m in page] == [3, 4, 5]

    run_async(scenario())


def test_a_guest_gets_a_new_session_when_the_server_ends_its_own(server: SquallProcess, room: str) -> None:
    url = f"http://127.0.0.1:{server.port}"
    name = nick("ivy")

    async def scenario() -> None:
        changed = asyncio.Event()
        session = await open_session(url, name)
        state = ChatState(session.nick)
        state.join(room, 0)
        link = Link(url, session, state, on_change=changed.set)
        running = asyncio.ensure_future(link.run())
        try:
            await until(lambda: state.connection is ConnectionState.OPEN and state.rooms[room].ready, changed)
            # Logging out ends the session: the server closes the socket with 4001.
            status, _ = await asyncio.to_thread(server.api, "POST", "/api/logout", token=session.token)
            assert status == 204
            await until(lambda: link.session.token != session.token and state.connection is ConnectionState.OPEN
                        and state.rooms[room].ready, changed)
            state.submit("after the renewal", "r1", asyncio.get_running_loop().time())
            link.flush()
            await until(lambda: state.queued == 0 and bool(state.rooms[room].messages), changed)
        finally:
            await link.stop()
            running.cancel()
        assert [m.body for m in state.rooms[room].messages] == ["after the renewal"]
        assert any("signed in again" in n.text for n in state.rooms[room].notices)

    run_async(scenario())
