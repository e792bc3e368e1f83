"""An edit's links are previewed again (issue 12, item 3): the preview comes as
an ``update`` with the edit's seq and the edited message as ``target``, and is
stored with that message, so history reads carry it. A local allow-listed site;
no URL leaves the machine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pipeline_support import LocalSite, Page, connect
from support import SquallProcess, http, run_async, squall_server

PAGES = {
    "/first": Page("text/html", b"<html><head><title>First page</title></head></html>"),
    "/second": Page("text/html", b"<html><head><title>Second page</title></head></html>"),
}


@pytest.fixture(scope="module")
def site() -> Iterator[LocalSite]:
    local = LocalSite(PAGES)
    try:
        yield local
    finally:
        local.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, site: LocalSite) -> Iterator[SquallProcess]:
    with squall_server(tmp_path_factory.mktemp("events-previews"),
                       env={"SQUALL_PREVIEW_ALLOW": f"127.0.0.1:{site.port}"}) as instance:
        yield instance


def test_an_edit_refreshes_the_previews(server: SquallProcess, site: LocalSite, room: str) -> None:
    token = server.session("alice")

    async def scenario() -> dict[str, Any]:
        async with site.serving():
            member = await connect(server, token, room)
            try:
                ack = await member.send(room, f"see {site.url('/first')}", "p1")
                first = await member.expect(lambda f: f.get("type") == "update" and f.get("seq") == ack["seq"])
                assert first["links"][0]["title"] == "First page" and "target" not in first
                await member.client.send_json({
                    "type": "edit", "room": room, "id": "p2", "target": ack["seq"],
                    "body": f"no, see {site.url('/second')}",
                })
                edit_ack = await member.answer("p2")
                change = await member.expect(lambda f: f.get("type") == "change" and f.get("id") == "p2")
                assert change["message"]["links"] == [site.url("/second")]
                assert "previews" not in change["message"], "an edit takes the old previews away"
                update = await member.expect(
                    lambda f: f.get("type") == "update" and f.get("seq") == edit_ack["seq"]
                )
                assert update["target"] == ack["seq"] and update["links"][0]["title"] == "Second page"
            finally:
                await member.close()
        history = await http(server.address, "GET", f"/api/rooms/{room}/messages", token=token)
        return dict(history.json()["messages"][0])

    stored = run_async(scenario())
    assert stored["edited"] is True and [p["title"] for p in stored["previews"]] == ["Second page"]
