"""Mention e-mails: compose one message per user, deliver it to an outbox or SMTP.

Theory of operation
-------------------

:func:`compose` is pure: given the user, their pending mentions and the time, it
returns an :class:`email.message.EmailMessage` (RFC 5322) with a plain-text body
and an HTML alternative. All of a user's pending mentions go into *one* message,
oldest first. The ``Message-ID`` is derived from the notification ids, so the
same batch composed twice (a retry) has the same id.

Delivery is behind :class:`Deliverer`: ``await deliverer.deliver(message, key=…)``
where ``key`` is a stable notification id.

* :class:`OutboxDeliverer` writes ``<key>.eml`` into a directory, via a temporary
  file that is fsync'ed and renamed, so readers never see half a message and a
  retry with the same key neither duplicates nor clobbers (an existing file wins).
* :class:`SmtpDeliverer` sends with ``aiosmtplib`` to ``smtp://host:port``
  (plain), ``smtp+starttls://host:port`` (STARTTLS required) or
  ``smtps://host:port`` (TLS from the start); ``user:password@`` in the URL logs in.

:func:`validate_email` checks an address a user registers. Retrying a failed
delivery is the notifier's job (``squall.processor.notifier``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import html
import os
import re
import tempfile
from collections.abc import Sequence
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Protocol
from urllib.parse import quote, unquote, urlsplit

import aiosmtplib

from squall.errors import BadRequest

__all__ = [
    "PendingMention",
    "compose",
    "room_link",
    "Deliverer",
    "OutboxDeliverer",
    "SmtpDeliverer",
    "validate_email",
    "MAX_EMAIL",
]

# RFC 5321 §4.5.3.1: 64 octets of local part, 254 for a usable path.
MAX_EMAIL = 254
MAX_LOCAL = 64
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_TLD = re.compile(r"(?:[A-Za-z]{2,63}|xn--[A-Za-z0-9-]{1,59})")
_SAFE_KEY = re.compile(r"[^A-Za-z0-9._-]")
# scheme -> (default port, implicit TLS, STARTTLS required)
_SMTP_SCHEMES = {
    "smtp": (25, False, False),
    "smtp+starttls": (587, False, True),
    "smtps": (465, True, False),
}
# Longest mention text quoted in a mail; the link leads to the rest.
MAX_QUOTE = 500


@dataclasses.dataclass(frozen=True, slots=True)
class PendingMention:
    """One mention waiting to be mailed. ``ts`` is milliseconds since the epoch."""

    notification_id: str
    room: str
    sender: str
    body: str
    ts: int
    seq: int | None = None


def room_link(base_url: str, room: str, seq: int | None = None) -> str:
    """URL of ``room`` (at message ``seq``) in the web client served at ``base_url``."""
    url = f"{base_url.rstrip('/')}/#{quote(room, safe='')}"
    return f"{url}/{seq}" if seq is not None else url


def _quote(body: str) -> str:
    return body if len(body) <= MAX_QUOTE else body[: MAX_QUOTE - 1] + "…"


def compose(
    *,
    to: str,
    nick: str,
    mentions: Sequence[PendingMention],
    sender: str,
    base_url: str,
    now: datetime.datetime,
    site_name: str = "Squall",
) -> EmailMessage:
    """Return one e-mail telling ``nick`` about every mention in ``mentions``.

    :param to: the user's validated address.
    :param sender: the From address, e.g. ``"Squall <noreply@chat.example>"``.
    :param now: the Date header; must be timezone-aware.
    Raises ValueError if ``mentions`` is empty.
    """
    if not mentions:
        raise ValueError("compose() needs at least one mention")
    items = sorted(mentions, key=lambda m: (m.ts, m.notification_id))
    rooms = list(dict.fromkeys(m.room for m in items))
    if len(items) == 1:
        subject = f"{items[0].sender} mentioned you in #{items[0].room}"
    else:
        subject = f"{len(items)} mentions in " + ", ".join(f"#{r}" for r in rooms[:3])
        if len(rooms) > 3:
            subject += f" and {len(rooms) - 3} more"

    text = [f"Hello {nick},", "", "you were mentioned while you were away:", ""]
    rows = []
    for m in items:
        when = datetime.datetime.fromtimestamp(m.ts / 1000, datetime.UTC)
        stamp = when.strftime("%Y-%m-%d %H:%M UTC")
        link = room_link(base_url, m.room, m.seq)
        text += [f"#{m.room}, {stamp}, {m.sender} wrote:", f"  {_quote(m.body)}", f"  {link}", ""]
        rows.append(
            f"<li><p><a href=\"{html.escape(link)}\">#{html.escape(m.room)}</a>, {stamp}, "
            f"<b>{html.escape(m.sender)}</b> wrote:</p>"
            f"<blockquote>{html.escape(_quote(m.body))}</blockquote></li>"
        )
    text += ["--", f"{site_name}: {base_url}"]

    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(now)
    digest = hashlib.sha256("\n".join(m.notification_id for m in items).encode()).hexdigest()
    domain = Address(addr_spec=parseaddr(sender)[1] or "squall@localhost").domain or "localhost"
    msg["Message-ID"] = f"<{digest[:32]}@{domain}>"
    # RFC 3834: tells vacation responders not to answer.
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content("\n".join(text) + "\n")
    msg.add_alternative(
        f"<p>Hello {html.escape(nick)},</p><p>you were mentioned while you were away:</p>"
        f"<ul>{''.join(rows)}</ul>"
        f"<p>-- <br><a href=\"{html.escape(base_url)}\">{html.escape(site_name)}</a></p>",
        subtype="html",
    )
    return msg


class Deliverer(Protocol):
    async def deliver(self, message: EmailMessage, *, key: str) -> None:
        """Hand ``message`` over; raise on failure so the caller can retry with ``key``."""


class OutboxDeliverer:
    """Writes each message as ``<dir>/<key>.eml``; for development and for relays
    that pick files up. The directory is created if missing."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = os.fspath(directory)

    def path_for(self, key: str) -> str:
        safe = _SAFE_KEY.sub("_", key)[:100]
        # The hash keeps two keys that sanitise alike from colliding.
        suffix = hashlib.sha256(key.encode()).hexdigest()[:12]
        return os.path.join(self.directory, f"{safe}-{suffix}.eml")

    async def deliver(self, message: EmailMessage, *, key: str) -> None:
        data = message.as_bytes()
        await asyncio.get_running_loop().run_in_executor(None, self._write, key, data)

    def _write(self, key: str, data: bytes) -> None:
        os.makedirs(self.directory, exist_ok=True)
        final = self.path_for(key)
        if os.path.exists(final):
            return
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".eml", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            # link() fails if another writer got there first, unlike rename().
            try:
                os.link(tmp, final)
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)


class SmtpDeliverer:
    """Sends over SMTP with aiosmtplib.

    :param url: ``smtp://host[:port]`` (default port 25, no TLS),
        ``smtp+starttls://host[:port]`` (587, STARTTLS required) or
        ``smtps://host[:port]`` (465, implicit TLS); optional ``user:pass@``.
    :param timeout: seconds for each SMTP operation; default 30.
    """

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in _SMTP_SCHEMES or not parts.hostname:
            raise ValueError(
                f"unsupported SMTP URL {url!r}; use smtp://, smtp+starttls:// or smtps://"
            )
        default_port, self.use_tls, self.start_tls = _SMTP_SCHEMES[parts.scheme]
        self.hostname = parts.hostname
        self.port = parts.port or default_port
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.timeout = timeout

    async def deliver(self, message: EmailMessage, *, key: str) -> None:
        await aiosmtplib.send(
            message,
            hostname=self.hostname,
            port=self.port,
            use_tls=self.use_tls,
            start_tls=self.start_tls,
            username=self.username,
            password=self.password,
            timeout=self.timeout,
        )


def validate_email(address: str) -> str:
    """Return ``address`` stripped, with the domain lower-cased; raise BadRequest.

    Conservative on purpose: a bare ``local@domain`` in ASCII, a dot-atom local
    part, a domain of at least two DNS labels. Quoted local parts, comments,
    display names, IP-literal and non-ASCII domains are refused (use punycode).
    """
    candidate = address.strip()
    fail = BadRequest(f"{candidate[:60]!r} is not an e-mail address we can use", code="bad_email")
    if not candidate or len(candidate) > MAX_EMAIL or parseaddr(candidate)[1] != candidate:
        raise fail
    local, sep, domain = candidate.rpartition("@")
    if not sep or len(local) > MAX_LOCAL or not _LOCAL.fullmatch(local):
        raise fail
    labels = domain.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(x) for x in labels):
        raise fail
    if not _TLD.fullmatch(labels[-1]):
        raise fail
    return f"{local}@{domain.lower()}"
