"""Start-up failures end the process at once with one clear line (issue 10, defects 3 and 10).

Every case runs the real ``squall`` command as a subprocess and asserts the exit
status, the one line on stderr (no traceback) and that it exits within
:data:`TIMEOUT` — before the fix these hung with a traceback and a leftover
thread, or served a web node whose processor crash-looped. ``squall run`` must
also leave no processor child behind.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from squall.supervisor import MAX_FAILED_STARTS
from support import TIMEOUT

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port that something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def squall(data_dir: Path, *args: str) -> tuple[int, list[str], float]:
    """Run ``squall ARGS`` to its end: (exit status, stderr lines, seconds it took)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQUALL_")}
    env.update({"SQUALL_LOG_LEVEL": "warning", "PYTHONPATH": str(TESTS)})
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "squall", *args, "--data-dir", str(data_dir)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=TIMEOUT,
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return done.returncode, lines, time.monotonic() - started


def leftover_children(data_dir: Path) -> list[psutil.Process]:
    """Processor children of a `squall run` on ``data_dir`` that are still alive."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if "--inherited-sockets" in (process.info["cmdline"] or []) and (
                process.environ().get("SQUALL_DATA_DIR") == str(data_dir)
            ):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def assert_one_line(lines: list[str], *words: str) -> None:
    assert len(lines) == 1, lines
    assert not any("Traceback" in line for line in lines)
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.mark.parametrize(("args", "words"), [
    (("--stages", "validate,bogus,store"), ["stages", "bogus"]),
    (("--stages", "store,no_such_module_anywhere:Stage"), ["stages", "no_such_module_anywhere"]),
    (("--stages", "store,json:no_such_stage"), ["stages", "json:no_such_stage"]),
    (("--stages", "validate,render"), ["stages", "store"]),
    (("--filter-file", "/nonexistent/filter.txt"), ["filter_file", "/nonexistent/filter.txt"]),
    (("--listen", "127.0.0.1:70000"), ["listen", "70000"]),
    (("--listen", "0.0.0.0:0"), ["listen", "secret"]),
    (("--smtp", "http://mail.example"), ["smtp"]),
])
def test_processor_refuses_to_start(tmp_path: Path, args: tuple[str, ...], words: list[str]) -> None:
    status, lines, _ = squall(tmp_path, "processor", *args)
    assert status == 2
    assert_one_line(lines, "squall processor:", *words)


def test_processor_refuses_a_bad_filter_file(tmp_path: Path) -> None:
    bad = tmp_path / "filter.txt"
    bad.write_text("fine\nnot [[ three fields\n", encoding="utf-8")
    status, lines, _ = squall(tmp_path, "processor", "--listen", "127.0.0.1:0", "--filter-file", str(bad))
    assert status == 2
    assert_one_line(lines, f"{bad}:2")


def test_processor_refuses_a_port_in_use(tmp_path: Path, busy_port: int) -> None:
    status, lines, seconds = squall(tmp_path, "processor", "--listen", f"127.0.0.1:{busy_port}")
    assert status == 2 and seconds < TIMEOUT
    assert_one_line(lines, "listen", str(busy_port), "in use")


@pytest.mark.parametrize(("args", "words"), [
    (("--port", "70000"), ["port", "70000"]),
    (("--port", "-5"), ["port", "-5"]),
])
def test_web_node_refuses_a_port_out_of_range(tmp_path: Path, args: tuple[str, ...], words: list[str]) -> None:
    status, lines, _ = squall(tmp_path, "web", *args)
    assert status == 2
    assert_one_line(lines, "squall web:", *words)


def test_web_node_refuses_a_port_in_use(tmp_path: Path, busy_port: int) -> None:
    status, lines, _ = squall(tmp_path, "web", "--port", str(busy_port))
    assert status == 2
    assert_one_line(lines, "squall web:", "port", str(busy_port), "in use")


def test_run_stops_when_its_processor_cannot_start(tmp_path: Path) -> None:
    """The child's own line, then the parent's, then exit 1: no web node is served."""
    status, lines, _ = squall(tmp_path, "run", "--port", "0", "--stages", "store,json:no_such_stage")
    assert status == 1
    assert not any("Traceback" in line for line in lines)
    assert [line.split(":")[0] for line in lines] == ["squall processor", "squall run"], lines
    assert "json:no_such_stage" in lines[0]
    assert "the processor could not start" in lines[1]
    assert not leftover_children(tmp_path)


def test_run_gives_up_after_a_bounded_number_of_failed_starts(tmp_path: Path) -> None:
    """A child that dies before it listens, for no reason of settings, is tried a few times."""
    status, lines, seconds = squall(tmp_path, "run", "--port", "0", "--stages", "store,stage_that_exits:x")
    assert status == 1 and seconds < TIMEOUT
    assert lines[-1].startswith("squall run: the processor could not start"), lines
    assert f"failed to start {MAX_FAILED_STARTS} times in a row" in lines[-1]
    assert sum("processor exited with 3" in line for line in lines) == MAX_FAILED_STARTS - 1
    assert not any("Traceback" in line for line in lines)
    assert not leftover_children(tmp_path)


def test_run_refuses_a_web_port_in_use_and_stops_its_child(tmp_path: Path, busy_port: int) -> None:
    status, lines, _ = squall(tmp_path, "run", "--port", str(busy_port))
    assert status == 2
    assert_one_line(lines, "squall run:", "port", str(busy_port), "in use")
    assert not leftover_children(tmp_path)


def test_run_refuses_a_processor_port_in_use(tmp_path: Path, busy_port: int) -> None:
    status, lines, _ = squall(tmp_path, "run", "--port", "0", "--processor-port", str(busy_port))
    assert status == 2
    assert_one_line(lines, "squall run:", "listen", str(busy_port), "in use")
    assert not leftover_children(tmp_path)


@pytest.mark.parametrize(("command", "args"), [
    ("processor", ("--listen", "127.0.0.1:0")),
    ("web", ("--port", "0")),
])
def test_an_unreachable_database_stops_start_up_without_showing_its_password(
    tmp_path: Path, command: str, args: tuple[str, ...]
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    url = f"postgresql://squall:hunter2@127.0.0.1:{port}/chat"
    status, lines, _ = squall(tmp_path, command, "--database", url, *args)
    assert status == 2
    assert_one_line(lines, f"squall {command}:", "database", "cannot connect", "squall:***@")
    assert "hunter2" not in lines[0]
