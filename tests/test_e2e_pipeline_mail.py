"""Mention e-mails end to end: ``squall run`` delivering to a real aiosmtpd server.

Each test has its own server and SMTP server. Users register an address with
``PATCH /api/me``. A mention of a user who is away is mailed ``notify_delay``
after the message; a user who was handed the message (WebSocket) is not
mailed. "Exactly once" and "not at all" are proven with a barrier: a later
mention of another away user, whose mail must arrive first.
"""

from __future__ import annotations

import email.utils
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline_support import Mail, connect, make_user, post, smtp_server
from support import PROCESSOR_LINE, SquallProcess, free_port, http, run_async, squall_server

BOB = "bob@example.org"
CAROL = "carol@example.org"
DAVE = "dave@example.org"
ERIN = "erin@example.org"
FAILED = "e-mail to bob failed"


@contextmanager
def mail_server(tmp_path: Path, smtp_port: int, *, delay: float = 1.0) -> Iterator[SquallProcess]:
    env = {
        "SQUALL_SMTP": f"smtp://127.0.0.1:{smtp_port}",
        "SQUALL_NOTIFY_DELAY": str(delay),
        "SQUALL_MAIL_RETRY_MIN": "0.2",
    }
    with squall_server(tmp_path / "data", env=env) as server:
        yield server


def _sender(mail: Mail) -> str:
    return email.utils.parseaddr(str(mail.message["From"]))[1]


def test_two_mentions_in_the_window_make_one_mail(tmp_path: Path, room: str) -> None:
    with smtp_server() as (smtp, port), mail_server(tmp_path, port) as server:
        alice = make_user(server, "alice")
        make_user(server, "bob", BOB)
        make_user(server, "erin", ERIN)
        post(server, room, alice, "hey @bob, first thing", "a1")
        post(server, room, alice, "and @Bob, the second thing", "a2")

        [mail] = smtp.wait_for(BOB)
        assert mail.rcpt == (BOB,)
        assert mail.message["To"] == BOB
        assert _sender(mail) == "squall@localhost"
        assert mail.message["Auto-Submitted"] == "auto-generated"
        text = mail.text
        assert "hey @bob, first thing" in text, text
        assert "and @Bob, the second thing" in text, text
        assert text.index("first thing") < text.index("second thing"), text

        # Barrier: a later mention of erin is mailed; no second mail for bob came first.
        post(server, room, alice, "@erin you too", "a3")
        smtp.wait_for(ERIN)
        assert len(smtp.to(BOB)) == 1, [m.text for m in smtp.to(BOB)]


def test_connected_user_gets_no_mail(tmp_path: Path, room: str) -> None:
    with smtp_server() as (smtp, port), mail_server(tmp_path, port) as server:
        alice = make_user(server, "alice")
        carol = make_user(server, "carol", CAROL)
        make_user(server, "dave", DAVE)

        async def carol_reads() -> None:
            member = await connect(server, carol, room)
            try:
                answer = await _post_async(server, room, alice, "@carol and @dave: lunch?", "b1")
                message = await member.message("b1")
                assert message["mentions"] == ["carol", "dave"], message
                assert answer["seq"] == message["seq"]
                # Barrier: dave, away, is mailed about the same message.
                await smtp.wait_for_async(DAVE)
            finally:
                await member.close()

        run_async(carol_reads())
        [mail] = smtp.to(DAVE)
        assert "lunch?" in mail.text
        assert smtp.to(CAROL) == []


async def _post_async(server: SquallProcess, room: str, token: str, body: str, cid: str) -> dict[str, object]:
    response = await http(
        server.address, "POST", f"/api/rooms/{room}/messages", token=token, json_body={"body": body, "id": cid}
    )
    assert response.status == 200, (response.status, response.body)
    return dict(response.json())


def test_mail_waits_for_smtp_to_come_up_and_is_sent_once(tmp_path: Path, room: str) -> None:
    port = free_port()  # nothing listens here yet
    with mail_server(tmp_path, port, delay=0.3) as server:
        alice = make_user(server, "alice")
        make_user(server, "bob", BOB)
        make_user(server, "erin", ERIN)
        post(server, room, alice, "@bob are you there?", "c1")
        server.wait_for_line(FAILED)  # the first delivery attempt failed

        with smtp_server(port) as (smtp, _):
            [mail] = smtp.wait_for(BOB)
            assert "are you there?" in mail.text
            post(server, room, alice, "@erin barrier", "c2")
            smtp.wait_for(ERIN)
            assert len(smtp.to(BOB)) == 1


def test_mail_survives_a_processor_crash_and_is_sent_once(tmp_path: Path, room: str) -> None:
    with smtp_server() as (smtp, port), mail_server(tmp_path, port, delay=2.0) as server:
        alice = make_user(server, "alice")
        make_user(server, "bob", BOB)
        make_user(server, "erin", ERIN)
        post(server, room, alice, "@bob before the crash", "d1")
        started = server.kill_processor()  # right after the ack, well before the mail is due
        assert smtp.mails == []
        server.wait_for_line(PROCESSOR_LINE, count=started + 1)  # `squall run` restarted it

        [mail] = smtp.wait_for(BOB)
        assert "before the crash" in mail.text
        post(server, room, alice, "@erin barrier", "d2")
        smtp.wait_for(ERIN)
        assert len(smtp.to(BOB)) == 1
