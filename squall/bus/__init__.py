"""The bus carries broadcasts from the node that made them to every web node.

:class:`Bus` is all the web node knows of it; the in-process bus serves one
node, and a Redis bus (later) serves many, with nothing above this interface
changing. Delivery is at-least-once and unordered across publishers; the hub
restores order and drops duplicates by seq.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from ..errors import ConfigError
from ..frames import Broadcast

__all__ = ["Bus", "open_bus", "Subscriber"]

# Broadcasts that arrived together, in order: the hub hands a member a room's
# messages that arrive together in one write.
Subscriber = Callable[[Sequence[Broadcast]], None]


class Bus(Protocol):
    async def start(self, subscriber: Subscriber) -> None:
        """Begin handing every broadcast, from any node, to ``subscriber``."""

    def publish(self, broadcast: Broadcast) -> None:
        """Send ``broadcast`` to every node's subscriber, this node's included."""

    def publish_all(self, broadcasts: Sequence[Broadcast]) -> None:
        """Publish ``broadcasts`` in order, as one delivery where the bus can."""

    async def close(self) -> None: ...


def open_bus(url: str) -> Bus:
    if url == "local":
        from .local import LocalBus

        return LocalBus()
    raise ConfigError(f"unsupported bus {url!r}; use 'local'")
