"""The bus carries broadcasts from the node that made them to every web node.

:class:`Bus` is all the web node knows of it; the in-process bus serves one
node, and a Redis bus (later) serves many, with nothing above this interface
changing. Delivery is at-least-once and unordered across publishers; the hub
restores order and drops duplicates by seq.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..errors import ConfigError
from ..frames import Broadcast

__all__ = ["Bus", "open_bus", "Subscriber"]

Subscriber = Callable[[Broadcast], None]


class Bus(Protocol):
    async def start(self, subscriber: Subscriber) -> None:
        """Begin handing every broadcast, from any node, to ``subscriber``."""

    def publish(self, broadcast: Broadcast) -> None:
        """Send ``broadcast`` to every node's subscriber, this node's included."""

    async def close(self) -> None: ...


def open_bus(url: str) -> Bus:
    if url == "local":
        from .local import LocalBus

        return LocalBus()
    raise ConfigError(f"unsupported bus {url!r}; use 'local'")
