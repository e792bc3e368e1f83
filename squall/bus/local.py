"""The in-process bus: one web node, no server to run."""

from __future__ import annotations

from collections.abc import Sequence

from ..frames import Broadcast
from . import Subscriber

__all__ = ["LocalBus"]


class LocalBus:
    def __init__(self) -> None:
        self._subscriber: Subscriber | None = None

    async def start(self, subscriber: Subscriber) -> None:
        self._subscriber = subscriber

    def publish(self, broadcast: Broadcast) -> None:
        if self._subscriber is not None:
            self._subscriber((broadcast,))

    def publish_all(self, broadcasts: Sequence[Broadcast]) -> None:
        if self._subscriber is not None and broadcasts:
            self._subscriber(broadcasts)

    async def close(self) -> None:
        self._subscriber = None
