"""Mention mail and message events, end to end with a real aiosmtpd server: a
mention added by an edit is mailed (with the new text), one the message had
already is not mailed twice, and a message deleted before its mail went out
is not mailed at all. "Not at all" is proven with a barrier: a later mention
of another away user, whose mail must arrive."""

from __future__ import annotations

from pathlib import Path

from pipeline_support import make_user, post, smtp_server
from support import squall_server

BOB = "bob@example.org"
CAROL = "carol@example.org"
ERIN = "erin@example.org"


def test_a_mention_added_by_an_edit_is_mailed_once(tmp_path: Path, room: str) -> None:
    with smtp_server() as (smtp, port), squall_server(tmp_path / "data", env={
        "SQUALL_SMTP": f"smtp://127.0.0.1:{port}", "SQUALL_NOTIFY_DELAY": "0.5",
    }) as server:
        alice = make_user(server, "alice")
        make_user(server, "bob", BOB)
        make_user(server, "carol", CAROL)
        make_user(server, "erin", ERIN)
        post(server, room, alice, "lunch at noon, @carol?", "a1")
        status, answer = server.api("POST", f"/api/rooms/{room}/messages", {
            "type": "edit", "id": "a2", "target": 1, "body": "lunch at one, @carol and @bob?",
        }, token=alice)
        assert status == 200, answer

        [mail] = smtp.wait_for(BOB)
        assert "lunch at one, @carol and @bob?" in mail.text, mail.text
        [first] = smtp.wait_for(CAROL)
        post(server, room, alice, "@erin barrier", "a3")
        smtp.wait_for(ERIN)
        assert len(smtp.to(BOB)) == 1
        assert len(smtp.to(CAROL)) == 1, "carol was mentioned before the edit: one mail"
        assert "lunch at noon" in first.text


def test_a_deleted_message_is_not_mailed(tmp_path: Path, room: str) -> None:
    with smtp_server() as (smtp, port), squall_server(tmp_path / "data", env={
        "SQUALL_SMTP": f"smtp://127.0.0.1:{port}", "SQUALL_NOTIFY_DELAY": "1.0",
    }) as server:
        alice = make_user(server, "alice")
        make_user(server, "bob", BOB)
        make_user(server, "erin", ERIN)
        post(server, room, alice, "@bob secret plans", "b1")
        status, answer = server.api(
            "POST", f"/api/rooms/{room}/messages", {"type": "delete", "id": "b2", "target": 1}, token=alice
        )
        assert status == 200, answer
        post(server, room, alice, "@erin barrier", "b3")
        smtp.wait_for(ERIN)
        assert smtp.to(BOB) == [], [m.text for m in smtp.to(BOB)]
