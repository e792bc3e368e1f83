"""The bench must keep working: run every scenario tiny, check it counted right.

These tests run ``python -m bench`` as ``make bench`` does, with four clients
and one second per scenario, and read the JSON it writes. They assert that each
run happened, that every subscriber got every message exactly once, and that
every row carries the figures the table explains: set-up time everywhere, and
CPU per delivery counting the processor wherever the target has one. They never
assert a timing: on a shared CI machine a figure means nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ["one-in-flight-500", "fanout-500", "latency", "rooms", "slow-client", "idle-memory", "longpoll",
             "processor", "filter", "cross-node", "uploads", "events-2000"]
COUNTED = {"one-in-flight-500", "fanout-500", "latency", "rooms", "slow-client", "longpoll", "events-2000"}
# Where several messages are in flight, the coalescing ceiling is the reference, and runs.
COALESCED = {"fanout-500", "rooms", "slow-client", "longpoll"}
PER_DELIVERY = {"one-in-flight-500", "fanout-500", "latency", "rooms", "slow-client", "longpoll", "events-2000"}
CLIENTS = 4


def _run_bench(tmp_path: Path, targets: str) -> tuple[dict[str, Any], str]:
    argv = [sys.executable, "-m", "bench", "--targets", targets, "--clients", str(CLIENTS),
            "--duration", "1", "--quick", "--no-pin", "--output", str(tmp_path)]
    for name in SCENARIOS:
        argv += ["--scenario", name]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record: dict[str, Any] = json.loads((tmp_path / "latest.json").read_text())
    return record, proc.stdout


def _expected_targets(name: str, targets: list[str]) -> set[str]:
    expected = set(targets)
    if name not in COALESCED:
        expected.discard("ceiling-coalescing")
    if name in ("longpoll", "processor", "filter"):
        expected.discard("websockets")
    if name == "processor":
        expected.discard("ceiling-coalescing")
    if name in ("cross-node", "uploads", "events-2000"):
        expected &= {"squall"}  # Squall's own features (two web nodes, uploads, reactions): nothing to compare
    return expected


def _check_counts(record: dict[str, Any], targets: list[str]) -> None:
    results = record["results"]
    assert set(results) == set(SCENARIOS)
    for name in SCENARIOS:
        assert set(results[name]) == _expected_targets(name, targets), (name, set(results[name]))
        for target, result in results[name].items():
            assert result["ok"], (name, target, result)
            if "skipped" in result:  # cross-node without Redis; SQUALL_REQUIRE_ALL_TESTS runs it
                assert not os.environ.get("SQUALL_REQUIRE_ALL_TESTS"), result
                continue
            assert result["setup_s"] >= 0, (name, target, result)
            if name in COUNTED:
                assert result["messages"] > 0, (name, target)
                assert result["deliveries"] == result["expected"], (name, target, result)
                assert result["duplicates"] == 0 and result["gaps"] == 0, (name, target, result)
            if name in PER_DELIVERY:
                assert result["cpu_us_per_delivery"] >= result["web_cpu_us_per_delivery"], (name, target, result)
                # The processor's CPU is counted wherever there is one; the websockets peer has none.
                assert ("processor_cpu_us_per_message" in result) == (target != "websockets"), (name, target)
            if name in ("one-in-flight-500", "fanout-500") and target != "websockets":
                # Hundreds of messages stored, each batch fsync'd: well above the 10 ms the kernel counts in.
                assert result["processor_cpu_s"] > 0, (name, target, result)
            if name == "events-2000":
                assert result["message_messages"] > 0 and result["change_messages"] > 0, (target, result)
                assert result["change_vs_message"] > 0, (target, result)
            if name in ("one-in-flight-500", "fanout-500", "latency", "slow-client", "longpoll", "events-2000"):
                assert result["expected"] == result["messages"] * CLIENTS, (name, target, result)
            if name == "one-in-flight-500":
                assert result["p99_ms"] >= result["p50_ms"] > 0, (target, result)
                assert result["first_arrival_p50_ms"] <= result["last_arrival_p50_ms"], (target, result)
            if name == "rooms":
                # Four clients make one room of four; each hears everyone, itself included.
                assert result["expected"] == result["messages"] * CLIENTS, (name, target, result)
            if name == "slow-client":
                phases = [result["alone"], result["with_slow"], result["alone_again"]]
                assert all(phase["messages"] > 0 for phase in phases), (target, result)
            if name == "processor":
                assert result["processed"] == result["messages"] > 0, (name, target, result)
                assert result["cpu_us_per_message_at_rate"] > 0, (name, target, result)
            if name == "uploads":
                assert result["uploads"] >= 1 and result["photos"] >= 1 and result["lost"] == 0, result
                assert result["p99_ms"] >= result["p50_ms"] > 0 and result["alone_p99_ms"] > 0, result
            if name == "filter":
                assert result["hits"] > 0 and result["mb_per_s"] > 0, (name, target, result)
            if name in ("idle-memory", "idle-10k"):
                assert result["clients"] == CLIENTS
            if name == "cross-node" and "skipped" not in result:  # skipped without Redis
                assert result["same_deliveries"] == result["other_deliveries"] == result["messages"] // 2 * CLIENTS


def _check_table(table: str) -> None:
    assert "How to read this" in table
    for name in SCENARIOS:
        assert f"\n{name}: " in table, name
    assert "Goals (" in table


def test_bench_against_ceilings_and_websockets(tmp_path: Path) -> None:
    targets = ["ceiling", "ceiling-coalescing", "websockets"]
    record, table = _run_bench(tmp_path, ",".join(targets))
    _check_counts(record, targets)
    _check_table(table)
    assert record["machine"]["versions"]["websockets"]


def test_bench_against_squall(tmp_path: Path) -> None:
    record, table = _run_bench(tmp_path, "squall")
    _check_counts(record, ["squall"])
    _check_table(table)


def test_bench_search_over_a_small_store(tmp_path: Path) -> None:
    """search-1m with 3000 messages: the store is filled, every query answers, the goal is judged."""
    argv = [sys.executable, "-m", "bench", "--targets", "squall", "--scenario", "search-1m",
            "--search-messages", "3000", "--no-pin", "--output", str(tmp_path)]
    env = {**os.environ, "SQUALL_BENCH_SEARCH_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "latest.json").read_text())["results"]["search-1m"]["squall"]
    assert result["ok"], result
    assert result["messages"] == 3000 and result["database_cached"] is False
    assert result["queries"] == 200 and result["results_first_round"] > 0
    assert result["p95_ms"] >= result["p50_ms"] > 0
    assert list((tmp_path / "cache").glob("search-3000-v*.db")), "the filled store is kept for the next run"
    assert "search-1m: " in proc.stdout and "p95 " in proc.stdout
