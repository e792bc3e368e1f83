"""The metrics registries and the readiness verdict cache, without a server.

End to end (real processes, real scrapes) is tests/test_operations.py.
"""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from squall.limits import Counters
from squall.metrics import NodeMetrics, ProcessorMetrics
from squall.web.readiness import Readiness, Verdict


def samples(exposition: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition.decode())
        for sample in family.samples
    }


def test_two_nodes_in_one_process_count_apart() -> None:
    """Each node has a registry of its own: no name clash, no shared counts
    (prometheus_client's global registry would refuse the second node)."""
    first, second = NodeMetrics(Counters()), NodeMetrics(Counters())
    ProcessorMetrics(), ProcessorMetrics()
    first.sends.inc(3)
    second.sends.inc()
    assert samples(first.exposition())[("squall_sends_total", ())] == 3
    assert samples(second.exposition())[("squall_sends_total", ())] == 1


def test_rejections_are_read_from_the_counters_at_scrape() -> None:
    counters = Counters()
    metrics = NodeMetrics(counters)
    assert not [key for key in samples(metrics.exposition()) if key[0] == "squall_rejections_total"]
    counters.count("rate_limited", "send_per_user")
    counters.count("rate_limited", "send_per_user")
    counters.count("empty_body", "pipeline")
    found = samples(metrics.exposition())
    assert found[("squall_rejections_total", (("code", "rate_limited"), ("limit", "send_per_user")))] == 2
    assert found[("squall_rejections_total", (("code", "empty_body"), ("limit", "pipeline")))] == 1


def test_read_at_scrape_metrics_follow_their_source() -> None:
    metrics = NodeMetrics(Counters())
    delivered = [0]
    metrics.deliveries.set_function(lambda: delivered[0])
    metrics.connections.labels("websocket").set_function(lambda: 7)
    delivered[0] = 12
    found = samples(metrics.exposition())
    assert found[("squall_deliveries_total", ())] == 12
    assert found[("squall_connections", (("transport", "websocket"),))] == 7
    # Fed from Redis (queue) or by the Redis bus only: there, at zero.
    assert found[("squall_queue_depth", ())] == 0
    assert found[("squall_queue_pending", ())] == 0
    assert found[("squall_bus_lag_seconds_count", ())] == 0


def test_readiness_sends_one_probe_for_concurrent_checks_and_reuses_it() -> None:
    now = [100.0]
    release: asyncio.Future[None] | None = None

    async def probe() -> Verdict:
        assert release is not None
        await release
        return Verdict(True, now[0], {"total": 1.0}, seq=readiness.runs)

    readiness = Readiness(probe, cache=5.0, clock=lambda: now[0])

    async def scenario() -> list[Verdict]:
        nonlocal release
        release = asyncio.get_running_loop().create_future()
        checks = [asyncio.ensure_future(readiness.check()) for _ in range(50)]
        await asyncio.sleep(0)  # every check is waiting on the one probe
        assert readiness.runs == 1
        release.set_result(None)
        first = await asyncio.gather(*checks)
        now[0] += 4.9  # still fresh
        cached = await readiness.check()
        now[0] += 0.2  # stale: a new probe
        release = asyncio.get_running_loop().create_future()
        release.set_result(None)
        fresh = await readiness.check()
        return [*first, cached, fresh]

    verdicts = asyncio.run(scenario())
    assert [v.seq for v in verdicts] == [1] * 51 + [2]
    assert readiness.runs == 2


def test_a_prober_that_hangs_up_does_not_cancel_the_others_probe() -> None:
    async def scenario() -> Verdict:
        release = asyncio.get_running_loop().create_future()

        async def probe() -> Verdict:
            await release
            return Verdict(True, 0.0)

        readiness = Readiness(probe, cache=1.0)
        gone = asyncio.ensure_future(readiness.check())
        staying = asyncio.ensure_future(readiness.check())
        await asyncio.sleep(0)
        gone.cancel()
        release.set_result(None)
        return await staying

    assert asyncio.run(scenario()).ready
