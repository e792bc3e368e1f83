"""``python -m bench --scenario queue`` must keep working: run it tiny, check its counts.

It drives Squall's own web-node side against real ``squall processor`` processes,
1 and 2 of them, over TCP links and through Redis Streams. Never asserts a timing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.redis
def test_the_queue_scenario_runs_every_mode_and_counts_right(tmp_path: Path, redis_prefix: str) -> None:
    argv = [sys.executable, "-m", "bench", "--scenario", "queue", "--targets", "squall",
            "--duration", "1", "--no-pin", "--output", str(tmp_path)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "latest.json").read_text())["results"]["queue"]["squall"]
    assert result["ok"], result
    assert set(result["runs"]) == {"tcp_1", "tcp_2", "queue_1", "queue_2"}
    for name, run in result["runs"].items():
        assert run["ok"] and not run["failures"], (name, run)
        assert run["messages"] > 0 and run["latency_messages"] == 100, (name, run)
    assert result["msgs_per_s"] == result["queue_1_msgs_per_s"]
    assert "queue_factor" in result and "tcp_factor" in result
