"""For load balancers and scrapers: ``/healthz``, ``/readyz`` and ``/metrics``.

``/healthz`` answers 200 as long as the event loop runs: it takes nothing but
the loop to answer. ``/readyz`` answers 200 once a canary message has come back
through processor, store and bus (:mod:`.readiness`), else 503 with the part
that failed. Both are open to anyone, as a load balancer must reach them; a
flood of ``/readyz`` sends at most one canary per ``ready_cache`` seconds.

``/metrics`` (Prometheus' text format) only to clients in ``metrics_allow``
(:func:`squall.address.metrics_refusal`); others get 403 ``metrics_forbidden``,
counted like every refusal. A processor serves ``/metrics`` and ``/healthz`` on
its own port (``processor_metrics``) through :func:`processor_operations_app`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import tornado.web

from ..address import HostPolicy, Network, metrics_refusal
from ..errors import Forbidden, Misdirected, NotFound
from ..metrics import CONTENT_TYPE, Metrics
from .base import BaseHandler, JSONErrors
from .readiness import Verdict

__all__ = ["HealthzHandler", "ReadyzHandler", "MetricsHandler", "processor_operations_app"]

log = logging.getLogger("squall.operations")


def _check_reader(handler: tornado.web.RequestHandler, allow: tuple[Network, ...], trusted: tuple[Network, ...]) -> None:
    refusal = metrics_refusal(handler.request.remote_ip or "", handler.request.headers, allow=allow, trusted=trusted)
    if refusal is not None:
        handler.counted_elsewhere = True  # type: ignore[attr-defined]  # a stranger's flood must not flood the log
        raise Forbidden(f"/metrics: {refusal}", code="metrics_forbidden")


def _write_metrics(handler: tornado.web.RequestHandler, metrics: Metrics) -> None:
    handler.set_header("Content-Type", CONTENT_TYPE)
    handler.set_header("Cache-Control", "no-store")
    handler.finish(metrics.exposition())


class HealthzHandler(BaseHandler):
    """``GET /healthz``: 200 while the event loop runs."""

    def get(self) -> None:
        self.write_json({"alive": True})


class ReadyzHandler(BaseHandler):
    """``GET /readyz``: 200 with the canary's timings, or 503 with what failed."""

    counted_elsewhere = True  # a 503 here is an answer, not a server error; Readiness logs changes

    async def get(self) -> None:
        node = self.node
        if node.stopping:
            verdict = Verdict(False, time.monotonic(), failed="node", reason="the node is shutting down")
        else:
            verdict = await node.readiness.check()
        self.write_json(verdict.to_dict(now=time.monotonic()), 200 if verdict.ready else 503)


class MetricsHandler(BaseHandler):
    """``GET /metrics``: this web node's metrics, to clients in ``metrics_allow``."""

    async def get(self) -> None:
        node = self.node
        try:
            _check_reader(self, node.metrics_allow, node.trusted_proxies)
        except Forbidden as refusal:
            node.limits.count(refusal.code, "metrics_allow")
            raise
        await node.read_queue_backlog()
        _write_metrics(self, node.metrics)


# -- the processor's port ------------------------------------------------------------


class _ProcessorHandler(JSONErrors):
    """The processor's port answers to its own host names only, as the web node
    does (a DNS-rebinding page in a browser on this machine is a loopback client)."""

    def initialize(self, hosts: HostPolicy) -> None:
        self.hosts = hosts

    def prepare(self) -> None:
        host = self.request.headers.get("Host")
        if not self.hosts.allows(host):
            raise Misdirected(self.hosts.refusal_reason(host or ""))


class _ProcessorMetrics(_ProcessorHandler):
    def initialize(  # type: ignore[override]
        self, hosts: HostPolicy, metrics: Metrics, allow: tuple[Network, ...], trusted: tuple[Network, ...]
    ) -> None:
        super().initialize(hosts)
        self.metrics = metrics
        self.allow = allow
        self.trusted = trusted

    def get(self) -> None:
        _check_reader(self, self.allow, self.trusted)
        _write_metrics(self, self.metrics)


class _ProcessorHealthz(_ProcessorHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(b'{"alive":true}')


class _NoRoute(_ProcessorHandler):
    def prepare(self) -> None:
        super().prepare()
        raise NotFound(f"no route for {self.request.method} {self.request.path}; try /metrics or /healthz")


def _quiet_log(handler: tornado.web.RequestHandler) -> None:
    status = handler.get_status()
    level = logging.DEBUG if status < 500 else logging.ERROR
    log.log(level, "%d %s %s (%s)", status, handler.request.method, handler.request.path, handler.request.remote_ip)


def processor_operations_app(
    metrics: Metrics, *, hosts: HostPolicy, allow: tuple[Network, ...], trusted: tuple[Network, ...]
) -> tornado.web.Application:
    """The processor's ``/metrics`` (to ``allow`` only) and ``/healthz``, for ``Host`` names in ``hosts``."""
    args: dict[str, Any] = {"hosts": hosts, "metrics": metrics, "allow": allow, "trusted": trusted}
    return tornado.web.Application(
        [(r"/metrics", _ProcessorMetrics, args), (r"/healthz", _ProcessorHealthz, {"hosts": hosts})],
        default_handler_class=_NoRoute, default_handler_args={"hosts": hosts},
        compress_response=False, log_function=_quiet_log,
    )

