"""``python -m bench``: run the scenarios against every target, print and save the results.

Examples::

    python -m bench                                  # everything, about 11 minutes
    python -m bench --quick                          # shorter runs, 1000 idle connections
    python -m bench --scenario fanout-2000 --targets ceiling-coalescing,websockets
    python -m bench --scenario fanout-500 --clients 5 --duration 1 --output /tmp/r

The process pins itself off the server core, raises its open-file limit to the
hard limit, and runs every scenario against each target in turn, starting a
fresh server for each. A target that is only a reference (the coalescing
ceiling) runs only in the scenarios it is the reference of. It exits 1 if any
run failed its counts or crashed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.util
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from .joinstorm import register as register_join_storms
from .search import register as register_search
from .report import GOALS, command_line, machine, table, write_results
from .scenarios import FANOUT_WINDOW, SCENARIOS, Options, Scenario, machine_busy_seconds
from .serving import loop_factory
from .targets import COALESCING_CEILING, TARGETS, Target, pin_self

register_join_storms(SCENARIOS, GOALS)  # bench/joinstorm.py
register_search(SCENARIOS, GOALS)  # bench/search.py
RESULTS_DIR = Path(__file__).resolve().parent / "results"
LOCAL_TARGETS = {"ceiling", "squall"}  # the in-process filter scenario has no websockets row
# With --wait-quiet, a run starts once the rest of the machine uses less than
# this many cores over one sample: a server sharing its core measures the sharing.
QUIET_CORES = 0.2
QUIET_SAMPLE_S = 1.0


def _raise_nofile(needed: int) -> tuple[int, int]:
    """Raise the soft open-file limit toward ``needed``, capped by the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS), metavar="NAME",
                        help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}")
    parser.add_argument("--targets", default=f"ceiling,{COALESCING_CEILING},websockets,squall",
                        help="comma-separated targets (default: %(default)s)")
    parser.add_argument("--quick", action="store_true",
                        help="3-second runs, 1000 idle connections, a smaller filter corpus")
    parser.add_argument("--clients", type=int, default=None,
                        help="clients in every scenario, replacing each scenario's own count")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds of load per scenario and target (default 10, and 60 for "
                             "latency; 3 with --quick)")
    parser.add_argument("--window", type=int, default=FANOUT_WINDOW,
                        help="messages a fan-out sender may have ahead of its slowest subscriber "
                             "(default %(default)s)")
    default_loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default=default_loop,
                        help="event loop of the load generator and the bench servers (default %(default)s)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds per scenario, targets interleaved; the best round of each is kept")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                        help=f"before each run, wait up to S seconds for the rest of the machine to use "
                             f"under {QUIET_CORES} cores (default 0: do not wait)")
    parser.add_argument("--search-messages", type=int, default=1_000_000, metavar="N",
                        help="messages stored for the search-1m scenario (default %(default)s; cached)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and load generator to cores")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR, help="where to write results JSON")
    return parser


async def _background_cores() -> float | None:
    """Cores the machine keeps busy over one sample while the bench itself is idle."""
    before = machine_busy_seconds()
    await asyncio.sleep(QUIET_SAMPLE_S)
    after = machine_busy_seconds()
    return None if before is None or after is None else (after - before) / QUIET_SAMPLE_S


async def _wait_quiet(patience: float) -> float | None:
    """Wait up to ``patience`` seconds for the machine to go quiet; return the last sample."""
    deadline = time.monotonic() + patience
    while True:
        busy = await _background_cores()
        if busy is None or busy < QUIET_CORES or time.monotonic() >= deadline:
            return busy
        print(f"  waiting for a quiet machine: {busy:.2f} cores busy", file=sys.stderr, flush=True)


def _better(scenario: Scenario, new: dict[str, Any], old: dict[str, Any] | None) -> bool:
    if old is None or not old.get("ok"):
        return True
    if not new.get("ok"):
        return False
    a, b = new.get(scenario.metric), old.get(scenario.metric)
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return False
    return a > b if scenario.higher_is_better else a < b


async def _run(
    names: list[str], targets: list[Target], options: Options, repeat: int, wait_quiet: float
) -> tuple[dict[str, Any], bool]:
    results: dict[str, dict[str, Any]] = {}
    unavailable = {t.name: t.unavailable() for t in targets}
    all_ok = True

    def record(name: str, target: Target, result: dict[str, Any]) -> None:
        nonlocal all_ok
        scenario = SCENARIOS[name]
        all_ok = all_ok and bool(result.get("ok"))
        figure = result.get(scenario.metric, result.get("error"))
        print(f"[{name}] {target.name}: {figure} {scenario.unit}, ok={result.get('ok')}",
              file=sys.stderr, flush=True)
        previous = results[name].get(target.name)
        rounds = (previous or {}).get("rounds", []) + [figure]
        if _better(scenario, result, previous):
            results[name][target.name] = result
        results[name][target.name]["rounds"] = rounds

    for name in names:
        scenario = SCENARIOS[name]
        results[name] = {}
        # Rounds go target by target and then again, so a burst of outside load
        # hurts one round of every target rather than every round of one.
        for round_ in range(repeat):
            runnable = []
            for target in targets:
                if target.reference_only and scenario.reference != target.name:
                    continue
                if scenario.kind == "local":
                    if target.name not in LOCAL_TARGETS:
                        continue
                    reason = unavailable[target.name] if target.name == "squall" else None
                elif scenario.kind not in target.kinds:
                    continue
                else:
                    reason = unavailable[target.name]
                if reason is not None:
                    results[name][target.name] = {"skipped": reason}
                    if round_ == 0:
                        print(f"[{name}] {target.name}: skipped ({reason})", file=sys.stderr)
                    continue
                runnable.append(target)
            # A side-by-side scenario runs every target at once; the others, one by one.
            batches = [runnable] if scenario.together is not None else [[t] for t in runnable]
            for batch in batches:
                if not batch:
                    continue
                background = await _wait_quiet(wait_quiet) if wait_quiet > 0 else None
                print(f"[{name}] {', '.join(t.name for t in batch)} ...", file=sys.stderr, flush=True)
                started = time.perf_counter()
                try:
                    if scenario.together is not None:
                        by_target = await scenario.together(batch, options)
                    else:
                        assert scenario.run is not None
                        by_target = {batch[0].name: await scenario.run(batch[0], options)}
                except Exception as exc:  # one broken target must not lose the other figures
                    traceback.print_exc()
                    by_target = {t.name: {"error": f"{type(exc).__name__}: {exc}", "ok": False} for t in batch}
                wall = round(time.perf_counter() - started, 1)
                for target in batch:
                    result = by_target[target.name]
                    result["wall_s"] = wall
                    if background is not None:
                        result["background_cpu_before"] = round(background, 3)
                    record(name, target, result)
    return results, all_ok


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = args.scenario or list(SCENARIOS)
    target_names = [t.strip() for t in args.targets.split(",") if t.strip()]
    for t in target_names:
        if t not in TARGETS:
            raise SystemExit(f"unknown target {t!r}: expected some of {', '.join(TARGETS)}")
    options = Options(
        duration=args.duration if args.duration is not None else (3.0 if args.quick else 10.0),
        latency_duration=args.duration if args.duration is not None else (3.0 if args.quick else 60.0),
        clients=args.clients,
        window=args.window,
        idle_connections=1000 if args.quick else 5000,
        filter_messages=5000 if args.quick else 20_000,
        search_messages=args.search_messages,
    )
    # Each client is one socket here and one in the server; the server inherits this limit.
    # idle-10k holds 10,000 at once.
    soft, hard = _raise_nofile(2 * max(options.idle_connections, options.clients or 0, 10_000) + 1000)
    pinning = None if args.no_pin else pin_self()
    targets = [TARGETS[t](pin=pinning is not None, loop=args.loop) for t in target_names]
    print(f"bench: scenarios {', '.join(names)}; targets {', '.join(target_names)}; "
          f"loop {args.loop}; {pinning or 'no pinning'}; open files {soft}/{hard}", file=sys.stderr)
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        results, all_ok = runner.run(_run(names, targets, options, max(1, args.repeat), args.wait_quiet))
    record = {
        "command": command_line(),
        "started": started,
        "machine": machine(args.loop, pinning),
        "options": dataclasses.asdict(options),
        "results": results,
    }
    path = write_results(args.output, record)
    print(table(results))
    print(f"\nwritten to {path}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
