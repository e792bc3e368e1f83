"""Fixtures for the browser tests: a real ``squall`` on free ports, and Chromium.

The tests drive Debian's Chromium (``/usr/bin/chromium``) through Playwright's
sync API; Playwright's own browser downloads are not used. Without Chromium every
test here is skipped with a message saying how to install it.

Servers are started as subprocesses with a temporary data folder. Readiness is
``/api/health`` answering with the processor connected, polled under a deadline;
nothing waits a fixed time.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("SQUALL_CHROMIUM", "/usr/bin/chromium"))
SKIP_REASON = (
    f"Chromium not found at {CHROMIUM}: install it with `apt-get install chromium` (Debian)"
    " to run the browser tests"
)
CHROMIUM_ARGS = [
    "--no-sandbox",  # the CI container runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
START_DEADLINE = 20.0  # seconds for a server to answer /api/health
STOP_DEADLINE = 10.0
# Playwright waits (expect, wait_for_*) in milliseconds. Generous: CI machines are slow,
# and a wait only takes long when the test is failing anyway.
WAIT_MS = 15_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class SquallServer:
    """One ``squall`` installation: a processor and a web node, started apart or together.

    ``split=True`` runs ``squall processor`` and ``squall web`` as two processes so that
    the web node alone can be killed and started again.
    """

    data_dir: Path
    web_args: tuple[str, ...] = ()
    split: bool = False
    port: int = field(default_factory=free_port)
    processor_port: int = field(default_factory=free_port)
    _web: subprocess.Popen[bytes] | None = None
    _processor: subprocess.Popen[bytes] | None = None
    _logs: list[Any] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, command: str, *extra: str) -> subprocess.Popen[bytes]:
        log = open(self.data_dir / f"{command}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        args = [
            sys.executable, "-m", "squall", command,
            "--port", str(self.port), "--processor-port", str(self.processor_port),
            "--data-dir", str(self.data_dir), *extra,
        ]
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def start(self) -> None:
        if self.split:
            if self._processor is None:
                self._processor = self._spawn("processor")
            self.start_web()
        else:
            self._web = self._spawn("run", *self.web_args)
            self.wait_ready()

    def start_web(self) -> None:
        self._web = self._spawn("web", *self.web_args)
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_DEADLINE
        while True:
            for process in (self._web, self._processor):
                if process is not None and process.poll() is not None:
                    raise RuntimeError(f"squall exited with {process.returncode}:\n{self.log_text()}")
            try:
                with urllib.request.urlopen(self.url + "/api/health", timeout=1) as response:
                    if json.load(response).get("processor") == "connected":
                        return
            except (OSError, urllib.error.URLError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"squall not ready after {START_DEADLINE} s:\n{self.log_text()}")
            time.sleep(0.05)  # between polls, not a guess at how long start-up takes

    def kill_web(self) -> None:
        """SIGKILL the web node: no goodbye to clients, as in a crash."""
        assert self._web is not None
        self._web.send_signal(signal.SIGKILL)
        self._web.wait(timeout=STOP_DEADLINE)

    def pause_web(self) -> None:
        """SIGSTOP the web node: its sockets stay open and silent, like a dead network path."""
        assert self._web is not None
        self._web.send_signal(signal.SIGSTOP)

    def resume_web(self) -> None:
        assert self._web is not None
        self._web.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        for process in (self._web, self._processor):
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                process.wait(timeout=STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for process in (self._web, self._processor):
            if process is not None:
                process.wait()
        for log in self._logs:
            log.close()

    def log_text(self) -> str:
        return "\n".join(
            path.read_text(errors="replace") for path in sorted(self.data_dir.glob("*.log"))
        )

    def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        """A JSON request to the server, for setting up and checking what pages did."""
        request = urllib.request.Request(self.url + path, method=method)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, data=data, timeout=10) as response:
            text = response.read()
        return json.loads(text) if text else None


# Module scope, not session: while Playwright's sync API is started, its event loop
# counts as running in this thread, and every later Tornado/asyncio test in the same
# pytest run would fail with "Cannot run the event loop while another loop is running".
@pytest.fixture(scope="module")
def playwright_instance() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(SKIP_REASON)
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        sync_api.expect.set_options(timeout=WAIT_MS)
        yield playwright


@pytest.fixture(scope="module")
def browser(playwright_instance: Any) -> Iterator[Any]:
    browser = playwright_instance.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SquallServer]:
    """A ``squall run`` shared by the tests of one module (each uses its own rooms)."""
    instance = SquallServer(tmp_path_factory.mktemp("squall"))
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., SquallServer]]:
    """``start_server(web_args=(), split=False)`` → a started SquallServer of its own,
    stopped when the test ends."""
    started: list[SquallServer] = []

    def start_server(*, web_args: tuple[str, ...] = (), split: bool = False) -> SquallServer:
        instance = SquallServer(tmp_path_factory.mktemp("squall"), web_args=web_args, split=split)
        started.append(instance)
        instance.start()
        return instance

    yield start_server
    for instance in started:
        instance.stop()


@dataclass
class ChatPage:
    """One person in one browser context, with the page's errors collected."""

    page: Any
    nick: str
    errors: list[str]

    def join(self, room: str) -> None:
        from playwright.sync_api import expect

        self.page.fill("#join-input", room)
        self.page.press("#join-input", "Enter")
        expect(self.page.locator(f'#room-list li[data-room="{room}"]')).to_have_count(1)
        expect(self.page.locator("#room-title")).to_have_text(f"#{room}")

    def send(self, text: str) -> None:
        self.page.fill("#composer", text)
        self.page.press("#composer", "Enter")

    def send_confirmed(self, text: str) -> None:
        """Send, and wait until this page has the server's ack (no pending message left)."""
        from playwright.sync_api import expect

        self.send(text)
        expect(self.page.locator("#messages li.pending, #messages li.failed")).to_have_count(0)

    def bodies(self) -> list[str]:
        """The text of every confirmed message, in page order."""
        return [
            text.strip() for text in
            self.page.locator("#messages li[data-seq] [data-testid=message-body]").all_inner_texts()
        ]

    def confirmed(self) -> Any:
        return self.page.locator("#messages li[data-seq]")

    def wait_open(self) -> None:
        from playwright.sync_api import expect

        expect(self.page.locator("#transport-indicator")).to_have_attribute("data-state", "open")

    def assert_no_errors(self) -> None:
        assert self.errors == [], self.errors


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., ChatPage]]:
    """``open_page(server, transport=None)`` → a ChatPage on the sign-in screen
    (``nick`` empty), in a browser context of its own."""
    contexts: list[Any] = []

    def open_page(
        server: SquallServer, *, transport: str | None = None,
        viewport: dict[str, int] | None = None, locale: str = "en-US",
        color_scheme: str = "light",
    ) -> ChatPage:
        context = browser.new_context(
            viewport=viewport or {"width": 1280, "height": 800}, locale=locale,
            color_scheme=color_scheme,
        )
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))
        page.on(
            "console",
            lambda message: errors.append(f"console: {message.text}")
            if "Content Security Policy" in message.text or "Uncaught" in message.text
            else None,
        )
        query = f"?transport={transport}" if transport else ""
        page.goto(server.url + "/" + query)
        return ChatPage(page=page, nick="", errors=errors)

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def open_chat(open_page: Callable[..., ChatPage]) -> Callable[..., ChatPage]:
    """``open_chat(server, nick, transport=None)`` → a ChatPage signed in as a guest."""

    def open_chat(server: SquallServer, nick: str, **options: Any) -> ChatPage:
        from playwright.sync_api import expect

        chat = open_page(server, **options)
        chat.page.fill("#nick-input", nick)
        chat.page.press("#nick-input", "Enter")
        expect(chat.page.locator("#app")).to_be_visible()
        chat.nick = nick
        return chat

    return open_chat
