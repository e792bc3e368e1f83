"""Sends beyond the rate limit are refused with ``rate_limited``, per user over
every transport; the connection stays usable. (tests/test_client_limits.py
has the limits per address, per connection and across connections.)"""

from __future__ import annotations

from typing import Any


from squall.errors import RateLimited
from squall.limits import Rate, RateTable
from support import ChatClient, SquallProcess, http, run_async

SQUALL_ENV = {"SQUALL_SEND_RATE": "0.5", "SQUALL_SEND_BURST": "2"}


def test_bucket_refuses_past_its_burst_and_says_when_to_retry() -> None:
    rate = Rate("send_per_user", 0.5, 2, "sends", "per user")
    table = RateTable(rate, max_keys=10)
    assert table.bucket("hasty", now=0.0).take(now=0.0)
    assert table.bucket("hasty", now=0.0).take(now=0.0)
    bucket = table.bucket("hasty", now=0.0)
    assert not bucket.take(now=0.0)
    refused = rate.refusal(bucket.retry_after())
    assert isinstance(refused, RateLimited) and "retry in 2.00 s" in refused.reason
    assert table.bucket("hasty", now=2.0).take(now=2.0)  # one token has come back


def test_websocket_sends_past_the_burst_are_refused(server: SquallProcess, room: str) -> None:
    async def scenario() -> list[dict[str, Any]]:
        client = await ChatClient.connect(server.address, server.session("hasty"))
        try:
            for number in range(3):
                await client.send_json({"type": "send", "room": room, "body": "x", "id": f"h{number}"})
            answers = [await client.recv_until(lambda f: f["type"] in ("ack", "error")) for _ in range(3)]
            await client.ping()  # still served
            return answers
        finally:
            await client.close()

    answers = run_async(scenario())
    assert sorted(a["type"] for a in answers) == ["ack", "ack", "error"]
    [refused] = [a for a in answers if a["type"] == "error"]
    assert (refused["code"], refused["id"]) == ("rate_limited", "h2")


def test_http_sends_past_the_burst_are_429(server: SquallProcess, room: str) -> None:
    token = server.session("eager")

    async def scenario() -> list[int]:
        statuses = []
        for number in range(3):
            response = await http(
                server.address, "POST", f"/api/rooms/{room}/messages", token=token,
                json_body={"body": "x", "id": f"e{number}"},
            )
            statuses.append(response.status)
            if response.status == 429:
                assert response.json()["code"] == "rate_limited"
        return statuses

    assert run_async(scenario()) == [200, 200, 429]
