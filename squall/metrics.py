"""Metrics for Prometheus: each part's registry, and every metric in it.

Theory of operation. A web node owns a :class:`NodeMetrics`, a processor a
:class:`ProcessorMetrics`. Each keeps its metrics in a registry of its own,
never prometheus_client's global ``REGISTRY``: two web nodes in one process (as
in the tests) neither collide on names nor count into each other. A new metric
is one line in the class of the part that has it; a new part that needs a
figure filled (a second processor link, the Redis queue) calls one method or
sets one metric it finds here.

A metric is one of two kinds, by what it costs where it is counted:

* *counted*: a Counter or Histogram of prometheus_client, touched where the
  event happens — once per send, per bus delivery, per group commit, never
  once per member or per delivered message;
* *read at scrape*: a figure the code keeps anyway (the open WebSockets, the
  hub's deliveries, the link's unanswered requests, the refusal
  :class:`~squall.limits.Counters`) read by a callback when ``/metrics`` is
  asked for, so the hot paths pay nothing for it.

Refusals are counted once, in :class:`~squall.limits.Counters` (which
``/api/health`` shows as ``rejections``); ``squall_rejections_total`` reads
them there. Who may read ``/metrics`` is decided by
:func:`squall.address.metrics_refusal` (``metrics_allow``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric

from .limits import Counters

__all__ = ["Metrics", "NodeMetrics", "ProcessorMetrics", "ReadCounter", "CONTENT_TYPE", "LinkState"]

# The text format generate_latest writes, named as every Prometheus reads it
# (newer prometheus_clients say version=1.0.0, which a Prometheus before 3.0
# does not know); our names and labels are plain ASCII, valid in both.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds. Handing a message to 2000 members takes about a millisecond (see
# docs/performance.md); the buckets reach from one member to a stall.
FANOUT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
# Seconds. An fsync'd SQLite commit takes about a millisecond on an SSD; a
# PostgreSQL round trip about as much. Past a second something is wrong.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Seconds from publish on one node to receipt on another.
LAG_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class LinkState(Protocol):
    """What metrics read of a processor link (:class:`~squall.processor.client.ProcessorLink`)."""

    address: tuple[str, int]
    connected: asyncio.Event  # set while the link is up and authenticated

    @property
    def in_flight(self) -> int: ...


class ReadCounter:
    """A counter whose value the code keeps itself as a plain number, read at
    scrape: :meth:`set_function` names the reader (until then it reads 0)."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self.read: Callable[[], float] = lambda: 0

    def set_function(self, read: Callable[[], float]) -> None:
        self.read = read

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation)

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, value=self.read())


class _Rejections:
    """``squall_rejections_total{code, limit}``, read from :class:`Counters` at scrape."""

    NAME = "squall_rejections"
    DOCUMENTATION = (
        "Refusals since start, by wire error code and by the limit or part that refused"
        " (the same figures as /api/health's rejections)"
    )

    def __init__(self, counters: Counters) -> None:
        self.counters = counters

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.NAME, self.DOCUMENTATION, labels=("code", "limit"))

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.NAME, self.DOCUMENTATION, labels=("code", "limit"))
        for code, by_limit in sorted(self.counters.snapshot().items()):
            for limit, count in sorted(by_limit.items()):
                family.add_metric((code, limit), count)
        yield family


class Metrics:
    """A registry of one's own, and the means to add a metric to it in one line."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        """A counter to increment where its event happens (``name`` without ``_total``)."""
        return Counter(name, documentation, labels, registry=self.registry)

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        """A gauge: ``set()`` it, or ``set_function()`` to read it at scrape."""
        return Gauge(name, documentation, labels, registry=self.registry)

    def histogram(self, name: str, documentation: str, buckets: Sequence[float]) -> Histogram:
        return Histogram(name, documentation, buckets=buckets, registry=self.registry)

    def read_counter(self, name: str, documentation: str) -> ReadCounter:
        """A counter the code keeps as a plain number (``name`` without ``_total``),
        for a hot path where even a Counter's lock is too much."""
        counter = ReadCounter(name, documentation)
        self.registry.register(counter)
        return counter

    def exposition(self) -> bytes:
        """Every metric in Prometheus' text format (:data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)


class NodeMetrics(Metrics):
    """A web node's metrics. The node binds the *read at scrape* ones to its state
    (:meth:`squall.web.node.WebNode` does, at start-up)."""

    def __init__(self, counters: Counters) -> None:
        super().__init__()
        self.registry.register(_Rejections(counters))
        self.sends = self.counter(
            "squall_sends", "Chat sends handed to the processor, over every transport (after the rate limits)"
        )
        self.acks = self.counter("squall_acks", "Sends answered with their seq: stored")
        self.deliveries = self.read_counter(
            "squall_deliveries",
            "Messages handed to local members and parked long-polls as they arrived, one per member"
            " (catch-up and history reads not included)",
        )
        self.fanout_seconds = self.histogram(
            "squall_fanout_seconds",
            "Time to hand what one bus delivery brought (one or more broadcasts) to every local member"
            " and parked long-poll",
            FANOUT_BUCKETS,
        )
        self.connections = self.gauge(
            "squall_connections", "Open client connections on this node, by transport", ("transport",)
        )
        self.processor_up = self.gauge(
            "squall_processor_up", "1 while the link to this processor is connected and authenticated, else 0",
            ("processor",),
        )
        self.processor_in_flight = self.gauge(
            "squall_processor_in_flight", "Sends handed to this processor and not yet answered", ("processor",)
        )
        self.presence_users = self.gauge(
            "squall_presence_users", "Users online on this node, in at least one room"
        )
        self.presence_memberships = self.gauge(
            "squall_presence_memberships", "(user, room) pairs online on this node: the members rooms list"
        )
        # Read from Redis at each scrape with --queue (NaN when Redis cannot say).
        self.queue_depth = self.gauge(
            "squall_queue_depth",
            "Entries in the Redis Streams queue (--queue) not yet read by any processor; 0 without a queue",
        )
        self.queue_pending = self.gauge(
            "squall_queue_pending",
            "Queue entries read by a processor and not yet acknowledged (XPENDING); 0 without a queue",
        )
        self.bus_lag_seconds = self.histogram(
            "squall_bus_lag_seconds",
            "Time from publish on a node to receipt on this one over the Redis bus; empty with the local bus",
            LAG_BUCKETS,
        )

    def watch_link(self, link: LinkState) -> None:
        """Read a processor link's state and unanswered requests at scrape, labelled ``HOST:PORT``."""
        label = f"{link.address[0]}:{link.address[1]}"
        self.processor_up.labels(label).set_function(lambda: 1.0 if link.connected.is_set() else 0.0)
        self.processor_in_flight.labels(label).set_function(lambda: float(link.in_flight))


class ProcessorMetrics(Metrics):
    """A processor's metrics, served on its own port (``processor_metrics``)."""

    def __init__(self) -> None:
        super().__init__()
        self.store_commit_seconds = self.histogram(
            "squall_store_commit_seconds",
            "Time of one group commit, as the processor waits for it: the store's transaction for a batch",
            COMMIT_BUCKETS,
        )
        self.failed_commits = self.counter(
            "squall_store_failed_commits", "Store transactions that failed (a failed batch is then stored message by message)"
        )
        self.stored_messages = self.counter(
            "squall_stored_messages", "Messages committed by this processor (a resent duplicate is not stored again)"
        )
        self.in_flight = self.gauge(
            "squall_pipeline_in_flight", "Requests in this processor's pipeline, from every web node"
        )
        self.links = self.gauge("squall_processor_links", "Authenticated web-node connections to this processor")
