"""The in-process bus: one web node, no server to run."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from ..frames import Broadcast
from . import Receiver

__all__ = ["LocalBus"]


class LocalBus:
    def __init__(self) -> None:
        self._receiver: Receiver | None = None

    async def start(self, receiver: Receiver) -> None:
        self._receiver = receiver

    async def subscribe(self, room: str) -> None:
        """Nothing to do: every broadcast is this node's own."""

    def unsubscribe(self, room: str) -> None:
        pass

    def publish(self, broadcast: Broadcast) -> None:
        if self._receiver is not None:
            self._receiver.receive_all((broadcast,))

    def publish_all(self, broadcasts: Sequence[Broadcast]) -> None:
        if self._receiver is not None and broadcasts:
            self._receiver.receive_all(broadcasts)

    def publish_sessions_ended(self, session_ids: Collection[str]) -> None:
        pass

    def publish_access_changed(self, changes: Sequence[tuple[str, str, str]]) -> None:
        pass

    def publish_seen(self, marks: Sequence[tuple[str, str, str]]) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {"kind": "local"}

    async def close(self) -> None:
        self._receiver = None
