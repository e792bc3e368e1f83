"""``pip install squall`` without extras gives a server that works (issue 10, defect 9).

``websockets`` used to be listed only in the ``test`` extra although the web
node imports it at run time, so a plain install started a server that crashed.
This test installs a copy of the package, without extras, into a fresh venv
(pip's cache keeps it quick), starts ``squall run`` from there, and checks
``/api/health`` and a WebSocket handshake with a message sent and acknowledged.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from support import ChatClient, TIMEOUT, run_async, squall_server

ROOT = Path(__file__).resolve().parent.parent
# Creating the venv and installing the runtime dependencies from pip's cache
# takes about 15 s on an idle machine; a busy one (2 shared cores) is slower.
INSTALL_TIMEOUT = 8 * TIMEOUT


def test_plain_install_serves_health_and_websocket(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "squall", source / "squall", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=INSTALL_TIMEOUT)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)],
        check=True, timeout=INSTALL_TIMEOUT, stdin=subprocess.DEVNULL,
    )
    extras = subprocess.run(
        [python, "-c", "import importlib.util as u; print([m for m in ('pytest', 'psutil') if u.find_spec(m)])"],
        check=True, capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert extras.stdout.strip() == "[]", "the venv holds test extras: it proves nothing"

    with squall_server(tmp_path / "data", python=python) as server:  # waits for /api/health
        status, health = server.api("GET", "/api/health")
        assert status == 200 and health["processor"] == "connected", health
        token = server.session("alice")

        async def scenario() -> None:
            client = await ChatClient.connect(server.address, token)
            try:
                assert (await client.join("lobby"))["type"] == "joined"
                await client.send_json({"type": "send", "room": "lobby", "id": "i1", "body": "installed"})
                ack = await client.recv_type("ack")
                assert ack["seq"] == 1
            finally:
                await client.close()

        run_async(scenario())
