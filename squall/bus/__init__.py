"""The bus carries broadcasts from the node that made them to every web node.

:class:`Bus` is all the web node knows of it: the in-process bus
(:mod:`.local`) serves one node, and the Redis bus (:mod:`.redis`) serves many,
with nothing above this interface changing.

A node receives a room's broadcasts while it is subscribed to the room
(:meth:`Bus.subscribe`; the hub subscribes while it has the room open), and
its own broadcasts at once, whatever the bus. Delivery is at-least-once and
unordered across publishers; the hub restores order and drops duplicates by
seq. A bus that may have lost broadcasts (a Redis connection dropped, a full
publish queue) never stays silent about it: it tells the receiver which rooms
to read from the store again (:meth:`Receiver.resync`).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Protocol

from ..errors import ConfigError
from ..frames import Broadcast

__all__ = ["Bus", "Receiver", "open_bus"]


class Receiver(Protocol):
    """What a bus hands its arrivals to (the web node)."""

    def receive_all(self, broadcasts: Sequence[Broadcast]) -> None:
        """Broadcasts that arrived together, in their order (one room's may come
        in one write to each member)."""

    def resync(self, rooms: Collection[str]) -> None:
        """Broadcasts of ``rooms`` may have been lost: read them from the store.
        Must not block; the reading happens in the background."""

    def sessions_ended(self, session_ids: Collection[str]) -> None:
        """Another node ended these sessions: refuse their tokens here too."""

    def access_changed(self, changes: Sequence[tuple[str, str, str]]) -> None:
        """Another node changed rooms or memberships: ``(room, key, evict)``
        (``key`` "" for the room itself; ``evict`` the code to close that
        user's open subscriptions to the room with, or "")."""

    def marked_seen(self, marks: Sequence[tuple[str, str, str]]) -> None:
        """Users read up to a message on another node: ``(room, key, seq as text)``;
        tell those users' connections here."""


class Bus(Protocol):
    async def start(self, receiver: Receiver) -> None:
        """Begin handing broadcasts to ``receiver``. Returns at once even if the
        bus's server is unreachable: it keeps trying, and resyncs when it is back."""

    async def subscribe(self, room: str) -> None:
        """Receive ``room``'s broadcasts from other nodes from now on.

        Returns once every broadcast published after the return will reach this
        node — or at once, while the bus is disconnected: the room is then
        subscribed and resynced (:meth:`Receiver.resync`) when it is back.
        Read the room's state from the store only after this returns.
        """

    def unsubscribe(self, room: str) -> None:
        """Stop receiving ``room``'s broadcasts from other nodes."""

    def publish(self, broadcast: Broadcast) -> None:
        """Send ``broadcast`` to every node's receiver, this node's included. Never blocks."""

    def publish_all(self, broadcasts: Sequence[Broadcast]) -> None:
        """Publish ``broadcasts`` in order, as one delivery where the bus can."""

    def publish_sessions_ended(self, session_ids: Collection[str]) -> None:
        """Tell the other nodes these sessions have ended (this node knows already)."""

    def publish_access_changed(self, changes: Sequence[tuple[str, str, str]]) -> None:
        """Tell the other nodes rooms or memberships changed (this node knows already)."""

    def publish_seen(self, marks: Sequence[tuple[str, str, str]]) -> None:
        """Tell the other nodes users read up to a message: ``(room, key, seq as text)``."""

    def status(self) -> dict[str, Any]:
        """A summary for ``/api/health``."""

    async def close(self) -> None: ...


def open_bus(
    url: str, *, prefix: str = "squall:", max_queue: int = 10_000,
    reconnect_min: float = 0.05, reconnect_max: float = 5.0, ping_interval: float = 5.0,
) -> Bus:
    """The bus for ``url``: ``local``, or ``redis://`` / ``rediss://`` (see
    docs/configuration.md for the keyword arguments)."""
    if url == "local":
        from .local import LocalBus

        return LocalBus()
    if url.startswith(("redis://", "rediss://")):
        from .redis import RedisBus

        return RedisBus(
            url, prefix=prefix, max_queue=max_queue, reconnect_min=reconnect_min,
            reconnect_max=reconnect_max, ping_interval=ping_interval,
        )
    raise ConfigError(f"unsupported bus {url!r}; use 'local' or redis://HOST:PORT/DB")
