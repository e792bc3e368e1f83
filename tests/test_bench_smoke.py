"""The bench must keep working: run every scenario tiny, check it counted right.

These tests run ``python -m bench`` as ``make bench`` does, with four clients
and one second per scenario, and read the JSON it writes. They assert that each
run happened and that every subscriber got every message exactly once. They
never assert a timing: on a shared CI machine a figure means nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ["fanout-500", "latency", "rooms", "slow-client", "idle-memory", "longpoll", "processor", "filter",
             "lone-message", "lone-processor", "idle-10k"]
COUNTED = {"fanout-500", "latency", "rooms", "slow-client", "longpoll", "lone-message"}
CLIENTS = 4


def _run_bench(tmp_path: Path, targets: str) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench", "--targets", targets, "--clients", str(CLIENTS),
            "--duration", "1", "--quick", "--no-pin", "--output", str(tmp_path)]
    for name in SCENARIOS:
        argv += ["--scenario", name]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record: dict[str, Any] = json.loads((tmp_path / "latest.json").read_text())
    return record


def _check_counts(record: dict[str, Any], targets: list[str]) -> None:
    results = record["results"]
    assert set(results) == set(SCENARIOS)
    for target in targets:
        for name in SCENARIOS:
            if name == "filter" and target == "websockets":
                assert target not in results[name]
                continue
            if name in ("longpoll", "processor", "lone-processor") and target == "websockets":
                continue
            result = results[name][target]
            assert result["ok"], (name, target, result)
            if name in COUNTED:
                assert result["messages"] > 0, (name, target)
                assert result["deliveries"] == result["expected"], (name, target, result)
                assert result["duplicates"] == 0 and result["gaps"] == 0, (name, target, result)
            if name in ("fanout-500", "latency", "slow-client", "longpoll", "lone-message"):
                assert result["expected"] == result["messages"] * CLIENTS, (name, target, result)
            if name == "rooms":
                # Four clients make one room of four; each hears everyone, itself included.
                assert result["expected"] == result["messages"] * CLIENTS, (name, target, result)
            if name == "slow-client":
                phases = [result["alone"], result["with_slow"], result["alone_again"]]
                assert all(phase["messages"] > 0 for phase in phases), (target, result)
            if name == "processor":
                assert result["processed"] == result["messages"] > 0, (name, target, result)
            if name == "filter":
                assert result["hits"] > 0 and result["mb_per_s"] > 0, (name, target, result)
            if name in ("idle-memory", "idle-10k"):
                assert result["clients"] == CLIENTS
            if name == "lone-processor":
                assert result["messages"] > 0 and result["processor_cpu_ms_per_message"] > 0, (target, result)
            if name == "lone-message":
                assert result["cpu_us_per_delivery"] > 0, (target, result)


def test_bench_against_ceiling_and_websockets(tmp_path: Path) -> None:
    record = _run_bench(tmp_path, "ceiling,websockets")
    _check_counts(record, ["ceiling", "websockets"])
    assert record["machine"]["versions"]["websockets"]


def test_bench_against_squall(tmp_path: Path) -> None:
    record = _run_bench(tmp_path, "squall")
    _check_counts(record, ["squall"])
