"""SIGTERM stops Squall cleanly, on every transport.

The web node stops accepting, closes WebSockets with 1001 (going away),
answers pending long-polls at once, ends SSE streams, waits for sends already
handed to the processor, and then the processor child stops too.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import psutil
from websockets.exceptions import ConnectionClosed

from support import TIMEOUT, ChatClient, EventStream, SquallProcess, close_writer, http, run_async


def test_sigterm_says_goodbye_on_every_transport(tmp_path: Path) -> None:
    server = SquallProcess(tmp_path)
    server.start()
    try:
        token = server.session("leaver")
        poller = server.session("poller")
        parent = psutil.Process(server.process.pid)  # type: ignore[union-attr]
        child = server.processor_child()

        async def scenario() -> dict[str, Any]:
            client = await ChatClient.connect(server.address, token)
            events = await EventStream.open(server.address, "bye", token)
            try:
                await client.join("bye")
                await events.next_of("joined")
                await client.send_json({"type": "send", "room": "bye", "body": "last words", "id": "w1"})
                ack = await client.recv_type("ack")
                # A kept-alive connection that has polled once and now idles between polls.
                idle_reader, idle_writer = await asyncio.open_connection(*server.address)
                idle_writer.write(
                    f"GET /api/rooms/bye/messages?since=0&wait=0 HTTP/1.1\r\n"
                    f"Host: {server.address[0]}:{server.port}\r\n"
                    f"Authorization: Bearer {poller}\r\n\r\n".encode()
                )
                head = await asyncio.wait_for(idle_reader.readuntil(b"\r\n\r\n"), TIMEOUT)
                assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" not in head
                poll = asyncio.ensure_future(http(
                    server.address, "GET", f"/api/rooms/bye/messages?since={ack['seq']}&wait=60",
                    token=poller, timeout=TIMEOUT,
                ))
                # The poll is waiting once its poller shows among the members.
                while "poller" not in (await http(
                    server.address, "GET", "/api/rooms/bye/members", token=token
                )).json()["members"]:
                    pass
                started = asyncio.get_running_loop().time()
                parent.send_signal(signal.SIGTERM)

                try:
                    while True:
                        await client.recv_json()
                except ConnectionClosed as closed:
                    close_code = closed.rcvd.code if closed.rcvd else None
                answered = await poll
                waited = asyncio.get_running_loop().time() - started
                stream_ended = False
                try:
                    while True:
                        await events.next_event()
                except EOFError:
                    stream_ended = True
                # What is left after the first answer's body is the end of the connection.
                idle_rest = await asyncio.wait_for(idle_reader.read(), TIMEOUT)
                await close_writer(idle_writer)
                return {
                    "close_code": close_code, "poll": answered, "waited": waited,
                    "stream_ended": stream_ended, "idle_rest": idle_rest,
                }
            finally:
                await client.close()
                await events.close()

        result = run_async(scenario())
        assert result["close_code"] == 1001
        assert result["poll"].status == 200
        assert result["poll"].json()["messages"] == []
        assert result["waited"] < 30, "the long-poll waited out its wait instead of being answered"
        assert result["stream_ended"]
        # The idle poll connection was hung up on: only its first answer's body came.
        assert b"HTTP/1.1" not in result["idle_rest"] and result["idle_rest"].endswith(b"}")
        assert server.process is not None
        assert server.process.wait(TIMEOUT) == 0
        child.wait(TIMEOUT)
        assert not child.is_running()
    finally:
        server.stop()
