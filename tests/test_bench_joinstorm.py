"""The join-storm scenarios of the bench keep working: run them tiny, check their counts.

As tests/test_bench_smoke.py does for the others: ``python -m bench`` with four
clients, the JSON it writes read back. No timing is asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ["join-5000", "reconnect-10000"]
CLIENTS = 4


@pytest.mark.parametrize("targets", ["squall", "ceiling,websockets"])
def test_join_storms_run_and_count_right(tmp_path: Path, targets: str) -> None:
    argv = [sys.executable, "-m", "bench", "--targets", targets, "--clients", str(CLIENTS),
            "--duration", "1", "--quick", "--no-pin", "--output", str(tmp_path)]
    for name in SCENARIOS:
        argv += ["--scenario", name]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results: dict[str, Any] = json.loads((tmp_path / "latest.json").read_text())["results"]
    for target in targets.split(","):
        fill = results["join-5000"][target]
        assert fill["ok"] and fill["clients"] == CLIENTS and fill["setup_s"] > 0, fill
        storm = results["reconnect-10000"][target]
        assert storm["ok"], storm
        assert storm["deliveries"] == storm["expected"] > 0 and storm["duplicates"] == storm["gaps"] == 0, storm
        if target == "squall":  # only Squall replays what they missed
            assert storm["backlog_received"] >= CLIENTS * storm["missed"], storm
