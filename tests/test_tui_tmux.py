"""``squall chat`` used the way a person uses it: real terminals under tmux.

Each test starts ``squall chat`` clients in a tmux server of its own (a private
socket, ``tmux -L``), types into them with ``send-keys`` and reads what they show
with ``capture-pane`` (``-e`` keeps the escape sequences, to see highlighting),
against a real ``squall run``. Every wait polls the pane until the expected text
is there, under a deadline.
"""

from __future__ import annotations

import itertools
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support import TIMEOUT, SquallProcess, free_port

TMUX_SKIP = "tmux is not installed: apt-get install tmux (the terminal client's tests drive it)"
WIDTH, HEIGHT = 110, 24
# The history test writes 120 messages at once through HTTP.
SQUALL_ENV = {"SQUALL_SEND_RATE": "10000", "SQUALL_SEND_BURST": "10000", "SQUALL_MAX_ROOMS_PER_CONNECTION": "3"}

_names = itertools.count(1)


class Tmux:
    """A tmux server of the test's own, one window per client."""

    def __init__(self, workdir: Path) -> None:
        self.socket = f"squall-test-{os.getpid()}-{next(_names)}"
        self.workdir = workdir
        self.windows: list[str] = []
        self.socket_path: Path | None = None

    def tmux(self, *args: str) -> str:
        result = subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True, text=True, timeout=TIMEOUT,
        )
        assert result.returncode == 0, (args, result.stderr)
        return result.stdout

    def chat(self, name: str, url: str, *args: str) -> str:
        """Start ``squall chat URL ARGS`` in window ``name``. Its stderr goes to a file,
        and the pane stays after an exit, saying so (to see why in a failure)."""
        argv = [sys.executable, "-m", "squall", "chat", url, *args]
        errors = self.workdir / f"{name}.stderr"
        line = f"{shlex.join(argv)} 2>{shlex.quote(str(errors))}; echo \"[exited $?]\"; read _"
        command = ["sh", "-c", line]
        if not self.windows:
            self.tmux("new-session", "-d", "-s", "chat", "-n", name, "-x", str(WIDTH), "-y", str(HEIGHT),
                      shlex.join(command))
            self.socket_path = Path(self.tmux("display-message", "-p", "#{socket_path}").strip())
        else:
            self.tmux("new-window", "-d", "-t", "chat", "-n", name, shlex.join(command))
        self.windows.append(name)
        return name

    def type(self, window: str, text: str, *, enter: bool = True) -> None:
        self.tmux("send-keys", "-t", f"chat:{window}", "-l", text)
        if enter:
            self.tmux("send-keys", "-t", f"chat:{window}", "Enter")

    def keys(self, window: str, *keys: str) -> None:
        self.tmux("send-keys", "-t", f"chat:{window}", *keys)

    def screen(self, window: str, *, escapes: bool = False) -> str:
        return self.tmux("capture-pane", "-p", *(["-e"] if escapes else []), "-t", f"chat:{window}")

    def wait_for(
        self, window: str, accept: str | Callable[[str], bool], *, escapes: bool = False, timeout: float = TIMEOUT
    ) -> str:
        """The pane's text once ``accept`` (a substring, or a test of the text) holds."""
        test = (lambda text: accept in text) if isinstance(accept, str) else accept
        deadline = time.monotonic() + timeout
        pause = 0.01
        while True:
            text = self.screen(window, escapes=escapes)
            if test(text):
                return text
            if time.monotonic() > deadline:
                errors = self.workdir / f"{window}.stderr"
                raise AssertionError(
                    f"{window}: never showed {accept!r} in {timeout} s; the pane:\n{text}\n"
                    f"stderr:\n{errors.read_text() if errors.exists() else ''}"
                )
            time.sleep(pause)  # between looks at a terminal, which cannot be subscribed to
            pause = min(pause * 2, 0.1)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=TIMEOUT)
        if self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)  # tmux leaves the socket file behind


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip(TMUX_SKIP)
    terminals = Tmux(tmp_path)
    try:
        yield terminals
    finally:
        terminals.kill()


def nick(base: str) -> str:
    return f"{base}{os.getpid() % 1000}x{next(_names)}"


def url(server: SquallProcess) -> str:
    return f"http://127.0.0.1:{server.port}"


def lines_with(text: str, screen: str) -> list[str]:
    return [line for line in screen.splitlines() if text in line]


def test_two_people_talk_join_a_room_act_and_see_a_mention(server: SquallProcess, room: str, tmux: Tmux) -> None:
    alice, bob = nick("alice"), nick("bob")
    a = tmux.chat("a", url(server), "--nick", alice, "--room", room)
    b = tmux.chat("b", url(server), "--nick", bob, "--room", room)
    tmux.wait_for(a, f"connected  {alice} #{room} (2 online)")
    tmux.wait_for(b, f"connected  {bob} #{room}")

    tmux.type(a, "hello there")
    tmux.wait_for(b, f"<{alice}> hello there")

    # Typing is shown to the other person while the line is being written.
    tmux.type(b, "thinking", enter=False)
    tmux.wait_for(a, f"{bob} is typing…")
    tmux.keys(b, "C-u")

    # A mention of alice: highlighted (reverse video) on her screen, plain on bob's.
    tmux.type(b, f"hi @{alice}, look")
    seen = tmux.wait_for(a, f"hi @{alice}, look", escapes=True)
    (line,) = lines_with(f"hi @{alice}, look", seen)
    assert "\x1b[1;7m" in line or "\x1b[7m" in line, repr(line)
    assert "◀" in line
    (own,) = lines_with(f"hi @{alice}, look", tmux.wait_for(b, f"hi @{alice}, look", escapes=True))
    assert "7m" not in own and "◀" not in own, repr(own)
    (plain,) = lines_with("hello there", seen)
    assert "7m" not in plain, repr(plain)

    # Another room, an action, and back with Ctrl+P.
    other = f"{room}-b"
    tmux.type(a, f"/join {other}")
    tmux.type(b, f"/join #{other.upper()}")
    tmux.wait_for(a, f"#{other} (2 online)")
    tmux.wait_for(b, f"#{other} (2 online)")
    tmux.type(a, "/me waves")
    tmux.wait_for(b, f"* {alice} waves")
    assert "hello there" not in tmux.screen(b)  # the other room's messages stay there
    tmux.keys(b, "C-p")
    screen = tmux.wait_for(b, f"#{room} (")
    assert "hello there" in screen and "waves" not in screen

    tmux.type(b, "/rooms")
    tmux.wait_for(b, f"-!- rooms: {room}, {other}")
    tmux.type(a, "/leave")
    tmux.wait_for(a, f"connected  {alice} #{room} ")
    tmux.type(a, "/quit")
    tmux.wait_for(a, "[exited 0]")

    messages = server.history(room, server.session(nick("reader")))
    assert [m["body"] for m in messages] == ["hello there", f"hi @{alice}, look"]


def test_page_up_reads_older_history_in_order(server: SquallProcess, room: str, tmux: Tmux) -> None:
    writer = nick("writer")
    token = server.session(writer)
    for index in range(1, 121):
        status, _ = server.api("POST", f"/api/rooms/{room}/messages", {"body": f"m-{index:04d}", "id": f"w{index}"},
                               token=token)
        assert status == 200
    reader = tmux.chat("r", url(server), "--nick", nick("reader"), "--room", room)
    tmux.wait_for(reader, "m-0120")
    seen: list[str] = []
    screen = tmux.screen(reader)
    deadline = time.monotonic() + 4 * TIMEOUT
    while "m-0001" not in screen:
        assert time.monotonic() < deadline, screen
        seen += [w for w in screen.split() if w.startswith("m-")]
        before = screen
        tmux.keys(reader, "PageUp")
        screen = tmux.wait_for(reader, lambda text, before=before: text != before)
    seen += [w for w in screen.split() if w.startswith("m-")]
    numbers = sorted({int(w[2:]) for w in seen})
    assert numbers == list(range(1, 121))  # every message, none missing
    shown = [int(w[2:]) for w in screen.split() if w.startswith("m-")]
    assert shown == sorted(set(shown)) and shown[0] == 1  # in seq order, no duplicate on a screen

    # Scrolled back, a new message does not move what is being read.
    status, _ = server.api("POST", f"/api/rooms/{room}/messages", {"body": "live one", "id": "w-live"}, token=token)
    assert status == 200
    after = tmux.wait_for(reader, "1 new below")
    assert after.splitlines()[:-2] == screen.splitlines()[:-2]  # every message row
    tmux.keys(reader, "PageDown")
    while "live one" not in tmux.screen(reader):
        assert time.monotonic() < deadline
        before = tmux.screen(reader)
        tmux.keys(reader, "PageDown")
        tmux.wait_for(reader, lambda text, before=before: text != before)
    bottom = tmux.wait_for(reader, lambda text: "scrolled back" not in text)
    assert "m-0120" in bottom and bottom.index("m-0120") < bottom.index("live one")


def test_nick_changes_to_a_new_guest_session(server: SquallProcess, room: str, tmux: Tmux) -> None:
    alice, bob, carol = nick("alice"), nick("bob"), nick("carol")
    a = tmux.chat("a", url(server), "--nick", alice, "--room", room)
    b = tmux.chat("b", url(server), "--nick", bob, "--room", room)
    tmux.wait_for(a, f"#{room} (2 online)")
    tmux.wait_for(b, f"#{room} (2 online)")
    tmux.type(a, f"/nick {carol}")
    tmux.wait_for(a, f"connected  {carol} #{room}")
    tmux.type(a, "now as carol")
    tmux.wait_for(b, f"<{carol}> now as carol")
    tmux.type(a, f"/nick {bob}")  # online: refused, with the server's reason
    tmux.wait_for(a, f"/nick {bob}: nick_taken")


def test_an_account_signs_in_with_its_password(server: SquallProcess, room: str, tmux: Tmux) -> None:
    dana = nick("dana")
    status, _ = server.api("POST", "/api/account", {"nick": dana, "password": "correct horse"})
    assert status == 201
    d = tmux.chat("d", url(server), "--nick", dana, "--password", "--room", room)
    tmux.wait_for(d, f"password for {dana}:")
    tmux.type(d, "correct horse")
    tmux.wait_for(d, f"connected  {dana} #{room}")
    tmux.type(d, "signed in")
    tmux.wait_for(d, lambda text: f"<{dana}> signed in" in text and "(sending…)" not in text)
    messages = server.history(room, server.session(nick("reader")))
    assert [(m["nick"], m["body"]) for m in messages] == [(dana, "signed in")]


def test_a_refused_session_is_one_line_and_exit_1(server: SquallProcess, room: str, tmux: Tmux) -> None:
    erin = nick("erin")
    status, _ = server.api("POST", "/api/account", {"nick": erin, "password": "correct horse"})
    assert status == 201
    result = subprocess.run(
        [sys.executable, "-m", "squall", "chat", url(server), "--nick", erin], capture_output=True, text=True,
        timeout=TIMEOUT, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"squall chat: {url(server)} refused a session for {erin!r}: nick_taken")
    assert "Traceback" not in result.stderr


def test_a_room_over_the_limit_is_refused_by_name(server: SquallProcess, room: str, tmux: Tmux) -> None:
    frank = nick("frank")
    f = tmux.chat("f", url(server), "--nick", frank, "--room", f"{room}-1", "--room", f"{room}-2", "--room", f"{room}-3")
    tmux.wait_for(f, f"#{room}-1 (1 online) | {room}-2 {room}-3")
    tmux.type(f, f"/join {room}-4")
    tmux.wait_for(f, f"cannot join #{room}-4: too_many_rooms: a connection may join at most 3 rooms")
    screen = tmux.wait_for(f, f"#{room}-1 (")
    assert f"{room}-4" not in screen.splitlines()[-2]  # the status line: the room is gone


def test_messages_typed_while_the_server_is_down_arrive_once_after_it_returns(
    tmp_path_factory: pytest.TempPathFactory, tmux: Tmux
) -> None:
    data, port = tmp_path_factory.mktemp("squall"), free_port()
    server = SquallProcess(data, args=("--port", str(port)))
    server.start()
    room = "restart"
    alice, bob = nick("alice"), nick("bob")
    try:
        a = tmux.chat("a", url(server), "--nick", alice, "--room", room)
        b = tmux.chat("b", url(server), "--nick", bob, "--room", room)
        tmux.wait_for(a, f"#{room} (2 online)")
        tmux.type(a, "before the restart")
        tmux.wait_for(b, "before the restart")

        server.stop()
        tmux.wait_for(a, "OFFLINE")
        tmux.type(a, "while down 1")
        tmux.type(a, "while down 2")
        down = tmux.wait_for(a, "2 queued")
        assert len(lines_with("(sending…)", down)) == 2

        server = SquallProcess(data, args=("--port", str(port)))
        server.start()
        tmux.wait_for(b, "while down 2", timeout=3 * TIMEOUT)
        screen_a = tmux.wait_for(a, lambda text: "(sending…)" not in text and "queued" not in text)
        screen_b = tmux.screen(b)
        for screen in (screen_a, screen_b):
            assert len(lines_with("before the restart", screen)) == 1
            assert len(lines_with("while down 1", screen)) == 1
            assert len(lines_with("while down 2", screen)) == 1
        assert screen_b.index("while down 1") < screen_b.index("while down 2")
        messages = server.history(room, server.session(nick("reader")))
        assert [m["body"] for m in messages] == ["before the restart", "while down 1", "while down 2"]
        assert [m["seq"] for m in messages] == [1, 2, 3]
    finally:
        server.stop()


def test_a_server_that_stops_answering_is_noticed_by_the_heartbeat(
    tmp_path_factory: pytest.TempPathFactory, tmux: Tmux
) -> None:
    """SIGSTOP freezes the web node with its sockets open, as a vanished network
    does (no FIN, no RST): only the keep-alive's missing pong tells."""
    data, port = tmp_path_factory.mktemp("squall"), free_port()
    server = SquallProcess(data, args=("--port", str(port)))
    server.start()
    assert server.process is not None
    room = "frozen"
    alice, bob = nick("alice"), nick("bob")
    stopped = False
    try:
        a = tmux.chat("a", url(server), "--nick", alice, "--room", room)
        b = tmux.chat("b", url(server), "--nick", bob, "--room", room)
        tmux.wait_for(a, f"#{room} (2 online)")
        tmux.wait_for(b, f"#{room} (2 online)")
        os.kill(server.process.pid, signal.SIGSTOP)
        stopped = True
        started = time.monotonic()
        tmux.wait_for(a, "OFFLINE", timeout=2 * TIMEOUT)
        noticed = time.monotonic() - started
        # At most 10 s by the timers (a ping every 5 s, 4 s for its pong, 1 s to close); slack for load.
        assert noticed < 14, f"the heartbeat took {noticed:.1f} s"
        tmux.type(a, "typed while frozen")
        tmux.wait_for(a, "1 queued")
        os.kill(server.process.pid, signal.SIGCONT)
        stopped = False
        tmux.wait_for(b, f"<{alice}> typed while frozen", timeout=3 * TIMEOUT)
        tmux.wait_for(a, lambda text: "(sending…)" not in text and "queued" not in text)
        messages = server.history(room, server.session(nick("reader")))
        assert [m["body"] for m in messages] == ["typed while frozen"]
    finally:
        if stopped:
            os.kill(server.process.pid, signal.SIGCONT)
        server.stop()
