"""``squall chat``'s screen: prompt_toolkit, full screen.

Three parts, top to bottom: the messages of the room on screen (newest at the
bottom; PageUp scrolls back and, at the top, reads older history), one status
line (connection, room, members, other rooms with unread counts, who is typing,
queued messages) and the input line. Everything shown is drawn from the
:class:`~squall.chat.state.ChatState` on each redraw; this module holds only
what is about the screen (the scroll position) and turns keys and lines into
calls on the state and the :class:`~squall.chat.net.Link`.
"""

from __future__ import annotations

import asyncio
import datetime
import time
import uuid
import zlib
from collections.abc import Iterable

from prompt_toolkit.application import Application
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.layout import HSplit, Layout, Window
from prompt_toolkit.layout.controls import FormattedTextControl
from prompt_toolkit.styles import Style
from prompt_toolkit.utils import get_cwidth
from prompt_toolkit.widgets import TextArea

from . import commands
from .net import Link, Session, SessionError, load_older, open_session
from .state import MAX_BODY_CHARS, ChatMessage, ChatState, ConnectionState, MessageState, Notice, same_nick

__all__ = ["ChatScreen", "run_chat"]

STYLE = Style.from_dict({
    "time": "fg:ansibrightblack",
    "notice": "fg:ansibrightblack italic",
    "pending": "fg:ansibrightblack",
    "failed": "fg:ansired",
    # A mention of us: the whole line in reverse video, as IRC clients mark highlights.
    "mention": "reverse bold",
    "action": "italic",
    "status": "bg:ansiblue fg:ansiwhite",
    "status.offline": "bg:ansired fg:ansiwhite bold",
    "status.connecting": "bg:ansiyellow fg:ansiblack",
    "status.unread": "bold",
    "status.mentioned": "bold underline",
    "prompt": "bold",
})
MAX_WRAPPED = 20_000  # items whose wrapped rows are cached (a room keeps at most 5000 messages)
NICK_COLOURS = ("ansired", "ansigreen", "ansiyellow", "ansiblue", "ansimagenta", "ansicyan")


def nick_style(nick: str) -> str:
    """A colour per nick, the same on every run (CRC-32 of the casefolded nick)."""
    return "bold fg:" + NICK_COLOURS[zlib.crc32(nick.casefold().encode()) % len(NICK_COLOURS)]


def _clock(ts: int) -> str:
    if ts <= 0:
        return "     "
    return datetime.datetime.fromtimestamp(ts / 1000).strftime("%H:%M")


def render_item(item: ChatMessage | Notice, me: str) -> StyleAndTextTuples:
    """One message or notice as styled fragments (one logical line, may hold newlines)."""
    if isinstance(item, Notice):
        return [("class:notice", f"-!- {item.text}")]
    mention = any(same_nick(n, me) for n in item.mentions) and not same_nick(item.nick, me)
    base = "class:mention " if mention else ""
    fragments: StyleAndTextTuples = [(base + "class:time", _clock(item.ts) + " ")]
    if item.deleted:
        fragments += [(nick_style(item.nick), f"<{item.nick}>"), ("class:notice", " (message deleted)")]
        return fragments
    if item.action is not None:
        fragments += [(base + "class:action", "* "), (base + nick_style(item.nick), item.nick),
                      (base + "class:action", " " + item.action)]
    else:
        fragments += [(base + nick_style(item.nick), f"<{item.nick}>"), (base, " " + item.body)]
    if item.edited:
        fragments.append(("class:notice", " (edited)"))
    if item.reactions:
        fragments.append(("class:notice", "  " + " ".join(f"{emoji} {count}" for emoji, count in item.reactions)))
    if mention:
        fragments.append((base, " ◀"))  # a marker that survives a terminal without reverse video
    if item.state is MessageState.PENDING:
        fragments = [("class:pending", fragment[1]) for fragment in fragments]
        fragments.append(("class:pending", "  (sending…)"))
    elif item.state is MessageState.FAILED:
        fragments = [("class:failed", fragment[1]) for fragment in fragments]
        fragments.append(("class:failed", f"  (not sent: {item.error})"))
    return fragments


def wrap(fragments: StyleAndTextTuples, width: int) -> list[StyleAndTextTuples]:
    """Split fragments into screen rows of at most ``width`` cells (and at newlines)."""
    rows: list[StyleAndTextTuples] = [[]]
    used = 0
    for fragment in fragments:
        style, text = fragment[0], fragment[1]
        for char in text:
            if char == "\n":
                rows.append([])
                used = 0
                continue
            cells = get_cwidth(char)
            if used + cells > width and used > 0:
                rows.append([])
                used = 0
            rows[-1].append((style, char))
            used += cells
    return rows


class ChatScreen:
    """The full-screen application for one :class:`Link`."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.state = link.state
        self.scroll = 0  # rows scrolled up from the newest
        self._at_top = False
        # While scrolled back, what arrives below moves the view by its rows, so
        # that the text being read stays still: the newest item at the last draw.
        self._newest: ChatMessage | Notice | None = None
        self.new_below = 0
        self._wrapped: dict[int, tuple[object, tuple[object, ...], list[StyleAndTextTuples]]] = {}
        self._loading: asyncio.Future[int] | None = None
        self.input = TextArea(
            height=1, multiline=False, prompt=self._prompt, accept_handler=self._accept,
            style="class:input",
        )
        self.input.buffer.on_text_changed += self._typed
        self.messages = Window(FormattedTextControl(self._messages_text), wrap_lines=False)
        status = Window(FormattedTextControl(self._status_text), height=1, style="class:status")
        self.application: Application[None] = Application(
            layout=Layout(HSplit([self.messages, status, self.input]), focused_element=self.input),
            key_bindings=self._keys(), style=STYLE, full_screen=True, mouse_support=False,
        )
        link.on_change = self.application.invalidate
        link.on_mention = lambda message: self.application.output.bell()

    # -- drawing ------------------------------------------------------------------

    def _prompt(self) -> StyleAndTextTuples:
        return [("class:prompt", f"[{self.state.active or '-'}] ")]

    def _rows(self, item: ChatMessage | Notice, width: int) -> list[StyleAndTextTuples]:
        """``item`` wrapped to ``width``, from a cache: a redraw wraps only what changed."""
        key = (width, self.state.nick, getattr(item, "state", None), getattr(item, "error", None))
        cached = self._wrapped.get(id(item))
        if cached is not None and cached[0] is item and cached[1] == key:
            return cached[2]
        if len(self._wrapped) > MAX_WRAPPED:
            self._wrapped.clear()
        rows = wrap(render_item(item, self.state.nick), width)
        self._wrapped[id(item)] = (item, key, rows)
        return rows

    def _height(self) -> int:
        return max(1, self.application.output.get_size().rows - 2)

    def _messages_text(self) -> StyleAndTextTuples:
        size = self.application.output.get_size()
        width, height = max(10, size.columns), self._height()
        room = self.state.shown
        wanted = height + self.scroll
        items = list(room.timeline())
        if self.scroll == 0:
            self.new_below = 0
        elif self._newest is not None:
            for index in range(len(items) - 1, -1, -1):
                if items[index] is self._newest:
                    arrived = items[index + 1:]
                    self.scroll += sum(len(self._rows(item, width)) for item in arrived)
                    self.new_below += sum(isinstance(item, ChatMessage) for item in arrived)
                    wanted = height + self.scroll
                    break
        self._newest = items[-1] if items else None
        exhausted = True
        chunks: list[list[StyleAndTextTuples]] = []
        count = 0
        for item in reversed(items):
            chunks.append(self._rows(item, width))
            count += len(chunks[-1])
            if count > wanted:  # one row more than shown: the top is not on screen
                exhausted = False
                break
        rows = [row for chunk in reversed(chunks) for row in chunk]
        self.scroll = min(self.scroll, max(0, len(rows) - height))
        self._at_top = exhausted and len(rows) - self.scroll <= height
        end = len(rows) - self.scroll
        visible = rows[max(0, end - height):end]
        visible[:0] = [[] for _ in range(height - len(visible))]  # newest at the bottom
        out: StyleAndTextTuples = []
        for index, row in enumerate(visible):
            out.extend(row)
            if index < len(visible) - 1:
                out.append(("", "\n"))
        return out

    def _status_text(self) -> StyleAndTextTuples:
        """Most urgent first, since a narrow terminal cuts the line at the right:
        connection, queue, where you are, other rooms, typing, why offline."""
        state = self.state
        now = time.monotonic()
        parts: StyleAndTextTuples = []
        online = state.connection is ConnectionState.OPEN
        if online:
            parts.append(("", " connected "))
        elif state.connection is ConnectionState.CONNECTING:
            parts.append(("class:status.connecting", " connecting… "))
        else:
            parts.append(("class:status.offline", " OFFLINE — reconnecting "))
        if state.queued:
            parts.append(("", f" {state.queued} queued |"))
        parts.append(("", f" {state.nick} "))
        room = state.rooms.get(state.active or "")
        if room is not None:
            parts.append(("bold", f"#{room.name}"))
            parts.append(("", f" ({room.member_count} online) " if online else " "))
        others = [r for r in state.rooms.values() if r.name != state.active]
        if others:
            parts.append(("", "| "))
            for other in others:
                style = "class:status.mentioned" if other.mentions else "class:status.unread" if other.unread else ""
                label = f"{other.name}({other.unread})" if other.unread else other.name
                parts.append((style, label + " "))
        if room is not None:
            typing = room.typing_nicks(now)
            if typing:
                shown = ", ".join(typing[:3]) + (f" and {len(typing) - 3} more" if len(typing) > 3 else "")
                parts.append(("", f"| {shown} {'is' if len(typing) == 1 else 'are'} typing… "))
        if self.scroll:
            below = f"{self.new_below} new below, " if self.new_below else ""
            parts.append(("", f"| scrolled back ({below}PageDown) "))
        if not online and self.link.last_error:
            parts.append(("", f"| {self.link.last_error[:80]} "))
        return parts

    # -- keys and lines --------------------------------------------------------------

    def _keys(self) -> KeyBindings:
        keys = KeyBindings()

        @keys.add("c-c")
        @keys.add("c-d")
        def _quit(event: KeyPressEvent) -> None:
            event.app.exit()

        @keys.add("c-n")
        def _next(event: KeyPressEvent) -> None:
            self._switch(1)

        @keys.add("c-p")
        def _previous(event: KeyPressEvent) -> None:
            self._switch(-1)

        @keys.add("pageup")
        def _up(event: KeyPressEvent) -> None:
            step = max(1, self._height() - 2)
            if self._at_top:
                self._load_older(then_scroll=step)  # the page moves once older messages are in
            else:
                self.scroll += step

        @keys.add("pagedown")
        def _down(event: KeyPressEvent) -> None:
            self.scroll = max(0, self.scroll - max(1, self._height() - 2))

        return keys

    def _switch(self, step: int) -> None:
        if self.state.cycle(step) is not None:
            self.scroll = 0
            self.application.invalidate()

    def _load_older(self, *, then_scroll: int) -> None:
        room = self.state.active
        if room is None or (self._loading is not None and not self._loading.done()):
            return
        self._loading = asyncio.ensure_future(load_older(self.link, room))

        def loaded(future: asyncio.Future[int]) -> None:
            if not future.cancelled() and future.exception() is None and future.result() and self.state.active == room:
                self.scroll += then_scroll
            self.application.invalidate()

        self._loading.add_done_callback(loaded)

    def _typed(self, _buffer: object) -> None:
        text = self.input.text
        if text and not text.startswith("/") and self.state.typing(time.monotonic()):
            self.link.flush()

    def _accept(self, buffer: object) -> bool:
        return not self.run_line(self.input.text)  # True keeps the text in the input

    def run_line(self, line: str) -> bool:
        """Do what a typed line says; False when it was refused and should stay in the input."""
        command = commands.parse_line(line)
        state, now = self.state, time.monotonic()
        body = command.body if isinstance(command, commands.Say) else f"/me {command.text}" if isinstance(command, commands.Action) else ""
        if len(body) > MAX_BODY_CHARS:
            state.notice(f"too long to send: {len(body)} characters, at most {MAX_BODY_CHARS}; shorten it and press Enter")
            self.application.invalidate()
            return False
        match command:
            case None:
                return True
            case commands.Say(body) | commands.Action(body) if state.active is None:
                state.notice("no room open: /join lobby")
            case commands.Say(body):
                state.submit(body, _client_id(), now, ts=_now_ms())
                self.scroll = 0
            case commands.Action(text):
                state.submit(f"/me {text}", _client_id(), now, ts=_now_ms())
                self.scroll = 0
            case commands.Join(room):
                state.join(room, now)
                self.scroll = 0
            case commands.Leave(room):
                name = room or state.active
                if name is None or not state.leave(name):
                    state.notice(f"not in {name}" if name else "no room open")
                self.scroll = 0
            case commands.ListRooms():
                names = [f"{r.name}{' (' + str(r.unread) + ' unread)' if r.unread else ''}" for r in state.rooms.values()]
                state.notice("rooms: " + (", ".join(names) if names else "none") + " — /join ROOM or Ctrl+N/Ctrl+P to switch")
            case commands.ChangeNick(nick):
                asyncio.ensure_future(self._change_nick(nick))
            case commands.Quit():
                self.application.exit()
            case commands.Help():
                state.notice(commands.HELP_TEXT)
            case commands.Invalid(reason):
                state.notice(reason)
        self.link.flush()
        self.application.invalidate()
        return True

    async def _change_nick(self, nick: str) -> None:
        if self.state.queued:
            self.state.notice(f"/nick waits until your {self.state.queued} queued message(s) are sent")
            self.application.invalidate()
            return
        try:
            session = await open_session(self.link.base_url, nick)
        except SessionError as exc:
            self.state.notice(f"/nick {nick}: {exc}")
        else:
            self.state.set_nick(session.nick)
            self.link.use_session(session)
            self.state.notice(f"you are now {session.nick} (a guest)")
        self.application.invalidate()


def _client_id() -> str:
    return "t-" + uuid.uuid4().hex  # one per message, kept across resends (idempotency)


def _now_ms() -> int:
    return int(time.time() * 1000)


async def run_chat(base_url: str, session: Session, rooms: Iterable[str], *, password: str | None = None) -> None:
    """Run the screen until /quit or Ctrl+C; the session is already open."""
    state = ChatState(session.nick)
    link = Link(base_url, session, state, on_change=lambda: None, password=password)
    names = list(rooms)
    for room in names:
        state.join(room, time.monotonic())
    if names:
        state.activate(names[0])
    screen = ChatScreen(link)
    connection = asyncio.ensure_future(link.run())
    try:
        await screen.application.run_async()
    finally:
        await link.stop()
        connection.cancel()
        try:
            await connection
        except asyncio.CancelledError:
            pass
