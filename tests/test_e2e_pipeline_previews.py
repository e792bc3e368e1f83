"""Link previews end to end: ``squall run``, a WebSocket member, local web sites.

Two Tornado sites run on 127.0.0.1. Only the "good" one is allow-listed, by
host and port (``SQUALL_PREVIEW_ALLOW=127.0.0.1:PORT``); the other is loopback
and not listed, so the processor must refuse it without connecting. No URL in
these tests leaves the machine.

A message with a link arrives with ``links`` at once; its preview follows as
an ``update`` frame and is stored with the message. A link that is refused or
is not HTML gives no update: proven with a later link whose update does
arrive (the barrier), after the not-HTML page had been served.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pipeline_support import LocalSite, Page, connect
from support import SquallProcess, http, run_async, squall_server

ARTICLE = b"""<!doctype html>
<html><head>
<meta charset="utf-8">
<title>Plain title</title>
<meta property="og:title" content="The  Og
  Title">
<meta property="og:description" content="What the page is about.">
<meta property="og:image" content="/img/cover.png">
<meta property="og:site_name" content="Local Site">
</head><body><p>Hello</p></body></html>
"""
SECOND = b"<html><head><title>Second page</title></head><body></body></html>"
PAGES = {
    "/article": Page("text/html; charset=utf-8", ARTICLE),
    "/second": Page("text/html", SECOND),
    "/data.json": Page("application/json", b'{"title": "not a page"}'),
}


def _site() -> Iterator[LocalSite]:
    site = LocalSite(PAGES)
    try:
        yield site
    finally:
        site.close()


# Two sites serving the same pages: only the first is on the preview allow-list.
good_site = pytest.fixture(scope="module", name="good_site")(_site)
refused_site = pytest.fixture(scope="module", name="refused_site")(_site)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, good_site: LocalSite, refused_site: LocalSite
) -> Iterator[SquallProcess]:
    env = {"SQUALL_PREVIEW_ALLOW": f"127.0.0.1:{good_site.port}"}
    with squall_server(tmp_path_factory.mktemp("previews"), env=env) as instance:
        yield instance


def _update_for(seq: int) -> Any:
    return lambda frame: frame.get("type") == "update" and frame.get("seq") == seq


def test_preview_arrives_as_update_and_is_stored(
    server: SquallProcess, good_site: LocalSite, room: str
) -> None:
    token = server.session("alice")
    url = good_site.url("/article")

    async def scenario() -> dict[str, dict[str, Any]]:
        async with good_site.serving():
            member = await connect(server, token, room)
            try:
                ack = await member.send(room, f"look at {url} please", "p1")
                assert ack["type"] == "ack", ack
                message = await member.message("p1")
                assert message["links"] == [url], message
                assert "previews" not in message, message
                update = await member.expect(_update_for(ack["seq"]))
                assert update == {
                    "type": "update", "room": room, "seq": ack["seq"],
                    "links": [{
                        "url": url,
                        "title": "The Og Title",
                        "description": "What the page is about.",
                        "image": good_site.url("/img/cover.png"),
                        "site_name": "Local Site",
                    }],
                }, update
                # Read the message back three ways once the update is out:
                # the store has its previews, so every read should carry them.
                since = await http(server.address, "GET", f"/api/rooms/{room}/messages?since=0&wait=0", token=token)
                latest = await http(server.address, "GET", f"/api/rooms/{room}/messages", token=token)
                late = await connect(server, token)
                try:
                    await late.client.join(room, since=0)
                    backlog = await late.message("p1")
                finally:
                    await late.close()
                return {
                    "GET ?since=0": since.json()["messages"][0],
                    "GET (latest)": latest.json()["messages"][0],
                    "WS join since=0": backlog,
                }
            finally:
                await member.close()

    reads = run_async(scenario())
    assert good_site.requests.count("/article") == 1
    assert all(message["id"] == "p1" for message in reads.values()), reads
    titles = {how: [p.get("title") for p in message.get("previews", [])] for how, message in reads.items()}
    assert titles == dict.fromkeys(reads, ["The Og Title"]), titles


def test_refused_address_and_non_html_give_no_update(
    server: SquallProcess, good_site: LocalSite, refused_site: LocalSite, room: str
) -> None:
    token = server.session("bob")
    refused = refused_site.url("/article")
    not_html = good_site.url("/data.json")
    second = good_site.url("/second")

    async def scenario() -> list[dict[str, Any]]:
        async with good_site.serving(), refused_site.serving():
            member = await connect(server, token, room)
            try:
                json_served = good_site.served("/data.json")
                first = await member.send(room, f"{refused} and {not_html}", "q1")
                assert first["type"] == "ack", first
                assert (await member.message("q1"))["links"] == [refused, not_html]
                await json_served  # the processor did fetch it, and got JSON back

                # One message, three links: the update lists the HTML page only.
                mixed = await member.send(room, f"{refused} {not_html} {second}", "q2")
                update = await member.expect(_update_for(mixed["seq"]))
                assert update["links"] == [{"url": second, "title": "Second page"}], update

                # The server still serves: a plain message goes through.
                after = await member.send(room, "still here", "q3")
                assert after["type"] == "ack" and after["seq"] == mixed["seq"] + 1, after
                await member.message("q3")
                return member.frames
            finally:
                await member.close()

    frames = run_async(scenario())
    updates = [f for f in frames if f.get("type") == "update"]
    assert len(updates) == 1, updates  # none for "q1"
    assert refused_site.requests == [], "the refused site was contacted"
    # The JSON page was fetched once; the failure is cached for the second message.
    assert good_site.requests.count("/data.json") == 1, good_site.requests
    status, health = server.api("GET", "/api/health")
    assert status == 200 and health["processor"] == "connected", health
