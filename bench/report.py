"""Turning a run's figures into a table, a verdict per goal, and a JSON file.

The JSON file is the record: machine, versions, command line and every figure
of every scenario and target, so a later reader can recompute any ratio. The
table is for the terminal and for docs/performance.md.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

from .scenarios import SCENARIOS

__all__ = ["GOALS", "machine", "table", "write_results"]

# The goals from the issue, each judged on Squall's row against the ceiling's
# in the same run. None means "report only".
GOALS: dict[str, tuple[str, Any]] = {
    "fanout-500": (">= 1.0x ceiling, ahead of websockets", lambda s, c, w: s >= c and (w is None or s > w)),
    "fanout-2000": (">= 1.0x ceiling, ahead of websockets", lambda s, c, w: s >= c and (w is None or s > w)),
    "latency": ("p99 <= 1.2x ceiling", lambda s, c, w: s <= 1.2 * c),
    "rooms": ("report", None),
    "slow-client": (">= 0.9x alone, RSS growth <= 8 MiB", None),
    "idle-memory": ("<= 10 KiB/conn", lambda s, c, w: s <= 10.0),
    "longpoll": ("<= 4x ceiling", lambda s, c, w: s <= 4 * c),
    "processor": (">= 5000/s, p99 < 10 ms at 100/s", None),
    "filter": ("report MB/s vs str.lower()", None),
    "lone-message": ("<= 1.0x ceiling (with its processor)", lambda s, c, w: s <= c),
    "lone-processor": ("<= 0.5 ms/msg", lambda s, c, w: s <= 0.5),
    "idle-10k": ("<= 4 KiB/conn", lambda s, c, w: s <= 4.0),
}

_VERSIONED = ["squall", "tornado", "websockets", "uvloop", "orjson", "psutil", "pyahocorasick"]


def machine(loop: str, pinning: str | None) -> dict[str, Any]:
    """Describe where and with what the run happened."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for name in _VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "event_loop": loop,
        "pinning": pinning or "none (no taskset, or a single core)",
        "versions": versions,
    }


def _headline(name: str, result: dict[str, Any]) -> float | None:
    value = result.get(SCENARIOS[name].metric)
    return float(value) if isinstance(value, (int, float)) else None


def _verdict(name: str, results: dict[str, dict[str, Any]]) -> str:
    text, judge = GOALS[name]
    squall = results.get("squall", {})
    if not squall or "error" in squall or "skipped" in squall:
        return text
    value = _headline(name, squall)
    if name == "processor":
        ok = squall.get("msgs_per_s", 0) >= 5000 and squall.get("p99_ms", 1e9) < 10
        return f"{text}: {'MET' if ok else 'NOT MET'}"
    if name == "slow-client":
        ok = squall.get("vs_alone", 0) >= 0.9 and squall.get("rss_growth_mib", 1e9) <= 8
        return f"{text}: {'MET' if ok else 'NOT MET'}"
    if judge is None or value is None:
        return text
    ceiling = _headline(name, results.get("ceiling", {}))
    peer = _headline(name, results.get("websockets", {}))
    if ceiling is None and name != "idle-memory":
        return text
    return f"{text}: {'MET' if judge(value, ceiling, peer) else 'NOT MET'}"


# Scenarios whose headline is a throughput: their server must be saturated.
_SATURATING = {"fanout-500", "fanout-2000", "rooms"}
SATURATED_CPU = 0.9  # cores; below this a throughput row did not measure the server's limit


def _cores(value: Any) -> str:
    return "" if value is None else f"{value:.2f}"


def _server_cpu_text(name: str, result: dict[str, Any]) -> str:
    """The server's CPU, marked when a throughput row did not saturate it, with the reason."""
    cpu = result.get("server_cpu")
    if cpu is None:
        return ""
    text = f"{cpu:.2f}"
    if name in _SATURATING and cpu < SATURATED_CPU:
        wait = result.get("server_wait")
        if wait is not None:
            # Runnable but not running: another program had the core. Neither: the server idled.
            text += " CONTENDED" if cpu + wait >= SATURATED_CPU else " IDLE"
        else:
            text += " UNSATURATED"
    return text


def table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Format every scenario's rows: headline figure, ratio to the ceiling, CPU, checks."""
    rows = [("scenario", "target", "figure", "x ceiling", "server cpu", "server wait", "loadgen cpu",
             "other cpu", "counts", "details")]
    verdicts = []
    for name, by_target in results.items():
        scenario = SCENARIOS[name]
        ceiling = _headline(name, by_target.get("ceiling", {}))
        for target, result in by_target.items():
            if "skipped" in result:
                rows.append((name, target, "skipped", "", "", "", "", "", result["skipped"][:60], ""))
                continue
            if "error" in result:
                rows.append((name, target, "FAILED", "", "", "", "", "", result["error"][:60], ""))
                continue
            value = _headline(name, result)
            figure = f"{value:,.1f} {scenario.unit}" if value is not None else "?"
            ratio = f"{value / ceiling:.2f}" if value is not None and ceiling else ""
            counts = "ok" if result.get("ok") else "CHECK FAILED"
            if "missing" in result:
                counts += f" ({result['deliveries']:,}/{result['expected']:,}, dup {result['duplicates']})"
            loadgen = result.get("loadgen_cpu")
            loadgen_text = "" if loadgen is None else f"{loadgen:.2f}" + (" SATURATED" if loadgen > 0.9 else "")
            details = ", ".join(f"{label} {result[key]:,}" for key, label in scenario.details if key in result)
            rows.append((name, target, figure, ratio, _server_cpu_text(name, result),
                         _cores(result.get("server_wait")), loadgen_text, _cores(result.get("other_cpu")),
                         counts, details))
        verdicts.append(f"  {name}: {_verdict(name, by_target)}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines + ["", "Goals (Squall's row against the ceiling's):", *verdicts])


def write_results(directory: Path, record: dict[str, Any]) -> Path:
    """Write ``record`` to ``<directory>/<UTC timestamp>.json`` and ``latest.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"{stamp}.json"
    text = json.dumps(record, indent=2, sort_keys=False) + "\n"
    for target in (path, directory / "latest.json"):
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(text)
        tmp.replace(target)
    return path


def command_line() -> str:
    return " ".join([Path(sys.executable).name, "-m", "bench", *sys.argv[1:]])
