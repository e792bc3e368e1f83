"""A session token in a URI (``?token=``) never reaches the log.

A real server logs at DEBUG, so every line that names a request is printed:
the access log (successful and failed, Tornado's handlers and the lean
long-poll connection), Tornado's own warnings, and the WebSocket upgrade.
Each request below carries a valid token in its query string and fails (or,
for the upgrade, succeeds); the token must appear in no line of the output,
while the requests themselves do, with the token redacted.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import pytest
from websockets.asyncio.client import connect

from support import TIMEOUT, ChatClient, SquallProcess, http, run_async, squall_server

ROOM = "logged"


@pytest.fixture(scope="module")
def noisy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SquallProcess]:
    with squall_server(tmp_path_factory.mktemp("squall"), env={"SQUALL_LOG_LEVEL": "debug"}) as server:
        yield server


def test_tokens_in_query_strings_are_redacted_in_every_log_line(noisy: SquallProcess) -> None:
    token = noisy.session("logged-user")
    assert token not in "\n".join(noisy.lines)
    requests = [
        # the lean long-poll path: a bad parameter, then a pipelined poll
        ("GET", f"/api/rooms/{ROOM}/messages?token={token}&since=abc"),
        ("GET", f"/api/rooms/Bad/messages?since=0&token={token}"),
        # Tornado's handlers
        ("GET", f"/api/rooms/Bad/members?token={token}"),
        ("GET", f"/api/rooms/{ROOM}/events?token={token}&since=x"),
        ("POST", f"/api/rooms/{ROOM}/messages?token={token}"),
        ("GET", f"/no/such/route?token={token}"),
        # the name percent-encoded (Tornado decodes it, so it is a token too)
        ("GET", f"/api/rooms/Bad/members?%74oken={token}"),
        ("GET", f"/static/%00?token={token}"),
    ]

    async def scenario() -> None:
        for method, path in requests:
            response = await http(noisy.address, method, path, body=b"{}" if method == "POST" else None)
            assert response.status >= 400, (path, response)
        # A successful upgrade is logged (at DEBUG) with its URI too.
        url = f"ws://{noisy.address[0]}:{noisy.address[1]}/ws?token={quote(token)}"
        client = ChatClient(await connect(url, compression=None, proxy=None, open_timeout=TIMEOUT))
        await client.ping()
        await client.close()

    run_async(scenario())
    noisy.wait_for_line("/no/such/route?token=")  # the last requests' lines are out
    noisy.wait_for_line("101 GET /ws?token=")
    output = "\n".join(noisy.lines)
    assert token not in output and quote(token) not in output
    # Not even its signature, which is what makes it a token.
    assert token.rsplit("|", 1)[-1] not in output
    assert output.count("token=[redacted]") >= len(requests), output[-5000:]
