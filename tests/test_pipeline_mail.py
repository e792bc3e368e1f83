"""Mention e-mails: composing, the outbox, real SMTP; back-off and the notify decision."""

from __future__ import annotations

import asyncio
import datetime
import email.parser
import email.policy
import socket
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from squall.errors import BadRequest
from squall.pipeline.mail import (
    OutboxDeliverer,
    PendingMention,
    SmtpDeliverer,
    compose,
    room_link,
    validate_email,
)
from squall.message import Draft
from squall.pipeline.notify import may_have_queued, plan
from squall.store import Notification

NOW = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC)
T0 = 1714564800000  # 2024-05-01 12:00 UTC in ms

MENTIONS = [
    PendingMention("n2", "random", "carol", "and @bob, see this <b>", T0 + 60_000, 7),
    PendingMention("n1", "general", "alice", "hey @bob, lunch?", T0, 42),
]


def make(mentions: list[PendingMention] = MENTIONS) -> EmailMessage:
    return compose(
        to="bob@example.com",
        nick="bob",
        mentions=mentions,
        sender="Squall <noreply@chat.example>",
        base_url="https://chat.example/",
        now=NOW,
    )


def test_compose_headers_and_bodies() -> None:
    msg = make()
    assert msg["To"] == "bob@example.com"
    assert msg["From"] == "Squall <noreply@chat.example>"
    assert msg["Subject"] == "2 mentions in #general, #random"
    assert msg["Date"] == "Wed, 01 May 2024 12:00:00 +0000"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Message-ID"].endswith("@chat.example>")
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    plain = text.get_content()
    # Oldest first, one message holding both.
    assert plain.index("alice") < plain.index("carol")
    assert "#general, 2024-05-01 12:00 UTC, alice wrote:" in plain
    assert "hey @bob, lunch?" in plain
    assert "https://chat.example/#general/42" in plain
    assert "&lt;b&gt;" in html.get_content() and "<b>" not in plain.split("carol")[0]


def test_compose_single_and_stable_id() -> None:
    one = make(MENTIONS[1:])
    assert one["Subject"] == "alice mentioned you in #general"
    assert make()["Message-ID"] == make(list(reversed(MENTIONS)))["Message-ID"]
    assert make()["Message-ID"] != one["Message-ID"]
    with pytest.raises(ValueError):
        make([])


def test_room_link() -> None:
    assert room_link("https://c.example", "a b/c") == "https://c.example/#a%20b%2Fc"
    assert room_link("https://c.example/", "x", 3) == "https://c.example/#x/3"


def test_outbox(tmp_path: Path) -> None:
    outbox = OutboxDeliverer(tmp_path / "out")
    msg = make()

    async def main() -> None:
        await outbox.deliver(msg, key="n1/n2")
        await outbox.deliver(msg, key="n1/n2")  # a retry does not duplicate
        await outbox.deliver(make(MENTIONS[1:]), key="n1")

    asyncio.run(main())
    files = sorted((tmp_path / "out").iterdir())
    assert len(files) == 2
    assert all(f.suffix == ".eml" and not f.name.startswith(".") for f in files)
    path = Path(outbox.path_for("n1/n2"))
    parsed = email.parser.BytesParser(policy=email.policy.default).parsebytes(path.read_bytes())
    assert parsed["Subject"] == msg["Subject"]
    assert parsed["Message-ID"] == msg["Message-ID"]
    body = parsed.get_body(("plain",))
    assert body is not None and "hey @bob, lunch?" in body.get_content()


class _Sink:
    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 OK"


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_smtp_delivery() -> None:
    sink = _Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=_unused_port())
    controller.start()
    try:
        smtp = SmtpDeliverer(f"smtp://127.0.0.1:{controller.port}", timeout=5)
        msg = make()
        # aiosmtplib returns only after the server answered DATA with 250, so
        # the handler has run by then; there is nothing to wait for.
        asyncio.run(smtp.deliver(msg, key="n1"))
    finally:
        controller.stop()
    assert len(sink.envelopes) == 1
    env = sink.envelopes[0]
    assert env.mail_from == "noreply@chat.example"
    assert env.rcpt_tos == ["bob@example.com"]
    got = email.parser.BytesParser(policy=email.policy.default).parsebytes(env.content)
    assert got["Subject"] == "2 mentions in #general, #random"


def test_smtp_urls() -> None:
    d = SmtpDeliverer("smtp+starttls://u%40x:p%3Aw@mail.example")
    assert (d.hostname, d.port, d.use_tls, d.start_tls) == ("mail.example", 587, False, True)
    assert (d.username, d.password) == ("u@x", "p:w")
    d = SmtpDeliverer("smtps://mail.example:2465")
    assert (d.port, d.use_tls, d.start_tls) == (2465, True, False)
    assert SmtpDeliverer("smtp://h").port == 25
    with pytest.raises(ValueError):
        SmtpDeliverer("http://mail.example")


@pytest.mark.parametrize(
    "address",
    ["bob@example.com", "Bob.Smith+chat@Mail.Example.ORG", "a@b.co", "x@xn--80ak6aa92e.com"],
)
def test_validate_email_accepts(address: str) -> None:
    local, domain = address.rsplit("@", 1)
    assert validate_email(f"  {address} ") == f"{local}@{domain.lower()}"


@pytest.mark.parametrize(
    "address",
    [
        "",
        "bob",
        "bob@",
        "@example.com",
        "bob@localhost",
        "bob@example",
        "bob@@example.com",
        "bob smith@example.com",
        "Bob <bob@example.com>",
        '"bob"@example.com',
        "bob..x@example.com",
        ".bob@example.com",
        "bob@-example.com",
        "bob@example.c",
        "bob@[127.0.0.1]",
        "böb@example.com",
        "bob@exämple.com",
        "bob@example.com\r\nBcc: x@y.z",
        "a" * 65 + "@example.com",
        "a@" + "b" * 63 + "." + ("c" * 63 + ".") * 3 + "com",
    ],
)
def test_validate_email_refuses(address: str) -> None:
    with pytest.raises(BadRequest) as info:
        validate_email(address)
    assert info.value.code == "bad_email"




def _pending(id: int, seq: int, *, seen: int | None, email: str | None = "bob@example.com") -> Notification:
    return Notification(id, "bob", "Bob", email, "lobby", seq, "alice", "hi @bob", T0, T0, 0, seen)


def test_plan_sends_unseen_and_skips_seen() -> None:
    pending = [_pending(1, 10, seen=11), _pending(2, 12, seen=11), _pending(3, 13, seen=11)]
    decided = plan(pending)
    assert [n.id for n in decided.send] == [2, 3]
    assert [n.id for n in decided.skip] == [1]


def test_plan_never_seen_room_sends_all() -> None:
    decided = plan([_pending(1, 1, seen=None), _pending(2, 2, seen=None)])
    assert [n.id for n in decided.send] == [1, 2] and not decided.skip


def test_plan_without_email_skips_all() -> None:
    decided = plan([_pending(1, 1, seen=None, email=None)])
    assert not decided.send and [n.id for n in decided.skip] == [1]


def _saved(seq: int, mentions: tuple[str, ...] = (), *, duplicate: bool = False) -> Draft:
    return Draft(room="r", nick="ann", id=f"c{seq}", body="hi", ts=0, seq=seq,
                 mentions=mentions, duplicate=duplicate)


def test_only_a_new_mention_is_worth_a_look_at_the_queue() -> None:
    assert not may_have_queued([])
    assert not may_have_queued([_saved(1), _saved(2)])
    assert not may_have_queued([_saved(1, ("bob",), duplicate=True)])
    assert may_have_queued([_saved(1), _saved(2, ("bob",))])
