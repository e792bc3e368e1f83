"""The processor's ordered chain of stages.

A stage is a callable ``stage(message: Draft) -> Draft`` (or an awaitable of
one). It returns the message, changed with ``dataclasses.replace`` if it
changes it, or raises :class:`~squall.errors.Rejected` with a code and a
reason. The chain is configured by name (``Settings.stages``): a built-in name
from :data:`BUILTIN_STAGES`, or ``module:callable`` for a stage of your own.
A named class is instantiated with the :class:`StageContext`; anything else
callable is used as it is. docs/pipeline.md has a worked example.

A change without a body (``delete``, ``react``, ``unreact``) runs through the
``store`` stage alone: there is no text to filter, render or preview. An
``edit`` runs through every stage, as a new message does.

A stage that raises anything but ``Rejected`` is logged and the message is
rejected with code ``internal``; the next message runs through the chain as
usual. :class:`~squall.errors.StoreUnavailable` (the database could not be
reached) is rejected with ``unavailable`` instead: the sender may retry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..config import Settings
from ..errors import ConfigError, Rejected, StoreUnavailable
from ..message import BODY_KINDS, Draft
from ..order import InOrder
from ..protocol import nick_key
from ..store import Store
from . import stages
from .guard import AccessGuard

__all__ = ["Pipeline", "StageContext", "Stage", "BUILTIN_STAGES", "load_stage"]

log = logging.getLogger("squall.pipeline")

Stage = Callable[[Draft], Draft | Awaitable[Draft]]


@dataclasses.dataclass(frozen=True)
class StageContext:
    """What a stage may need at start-up.

    ``send_update`` sends an unasked line (``{"op": "updated", ...}``) to every
    connected web node.
    """

    settings: Settings
    store: Store
    writer: stages.BatchWriter
    send_update: Callable[[dict[str, Any]], None]
    logger: logging.Logger = log


def _previews(ctx: StageContext) -> Stage:
    s = ctx.settings
    fetcher = stages.make_fetcher(
        allow=s.preview_allow, timeout=s.preview_timeout, max_bytes=s.preview_max_bytes,
        concurrency=s.preview_concurrency,
    )
    return stages.Previews(ctx.store, fetcher, ctx.send_update)


BUILTIN_STAGES: dict[str, Callable[[StageContext], Stage]] = {
    "validate": lambda ctx: stages.Validate(max_chars=ctx.settings.max_body_chars),
    "filter": lambda ctx: stages.Filter(
        ctx.settings.filter_file, default_action=ctx.settings.filter_action
    ),
    "render": lambda ctx: stages.Render(),
    "mentions": lambda ctx: stages.Mentions(ctx.store, allow_room=ctx.settings.room_mentions),
    "store": lambda ctx: ctx.writer.save,
    "previews": _previews,
}


def load_stage(name: str, ctx: StageContext) -> Stage:
    """Build the stage called ``name``: built-in, or ``module:callable``."""
    factory = BUILTIN_STAGES.get(name)
    if factory is not None:
        return factory(ctx)
    module_name, sep, attribute = name.partition(":")
    if not sep or not module_name or not attribute:
        known = ", ".join(BUILTIN_STAGES)
        raise ConfigError(f"stages: unknown stage {name!r}: use one of {known} or module:callable")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"stages: cannot load stage {name!r}: {exc}") from None
    except Exception as exc:  # the module itself failed while being imported
        raise ConfigError(
            f"stages: cannot load stage {name!r}: {type(exc).__name__}: {exc}"
        ) from None
    if inspect.isclass(target):
        make_stage: Callable[[StageContext], Any] = target
        target = make_stage(ctx)  # a stage with set-up: built once from the context
    if not callable(target):
        raise ConfigError(f"stage {name!r} is not callable")
    return target  # type: ignore[no-any-return]


class Pipeline:
    """Runs each message through the configured stages, in order."""

    def __init__(self, stage_list: list[tuple[str, Stage]]) -> None:
        self.stages = stage_list
        self._store_only = [(name, stage) for name, stage in stage_list if name == "store"]
        # One sender's messages to a room reach the store in the order they came,
        # whatever the stages before it waited on (the access guard's first read
        # of a room, a mention's user lookup): the store's seqs are that order.
        self._arrival = InOrder()

    @classmethod
    def from_settings(cls, ctx: StageContext) -> Pipeline:
        names = list(ctx.settings.stages)
        if "store" not in names:
            raise ConfigError("stages must include 'store', or nothing is ever saved")
        built: list[tuple[str, Stage]] = []
        for name in names:
            try:
                built.append((name, load_stage(name, ctx)))
            except ConfigError:
                raise
            except Exception as exc:
                log.debug("setting up stage %s failed", name, exc_info=True)
                raise ConfigError(
                    f"stages: setting up stage {name!r} failed: {type(exc).__name__}: {exc}"
                ) from None
        # Always first, whatever the configured stages: nothing reaches a
        # stage (or the store) from someone who may not post in the room.
        built.insert(0, ("access", AccessGuard(ctx.store, admins=ctx.settings.admins)))
        return cls(built)

    def reload(self) -> None:
        """Ask every stage that can (``reload()``) to re-read its files: SIGHUP."""
        for _name, stage in self.stages:
            reload = getattr(stage, "reload", None)
            if callable(reload):
                reload()

    async def close(self) -> None:
        """Let stages release what they hold (``close()``, maybe async)."""
        for name, stage in self.stages:
            close = getattr(stage, "close", None)
            if callable(close):
                try:
                    result = close()
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    log.exception("closing stage %s failed", name)

    async def run(self, message: Draft) -> Draft:
        """The processed message, or :class:`Rejected`."""
        key = (message.room, nick_key(message.nick))
        earlier, mine = self._arrival.enter(key)
        try:
            return await self._run(message, earlier, mine, key)
        finally:
            self._arrival.leave(key, mine)

    async def _run(
        self, message: Draft, earlier: asyncio.Future[None] | None, mine: asyncio.Future[None], key: object
    ) -> Draft:
        stages = self.stages if message.kind in BODY_KINDS else self._store_only
        for name, stage in stages:
            if name == "store":
                await InOrder.turn(earlier)
                self._arrival.leave(key, mine)  # the writer queues it before its first await
            try:
                result = stage(message)
                if not isinstance(result, Draft) and inspect.isawaitable(result):
                    result = await result
            except Rejected:
                raise
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as exc:
                raise Rejected(exc.reason, code=exc.code) from None
            except Exception:
                log.exception("stage %s failed on message %s/%s", name, message.room, message.id)
                raise Rejected(
                    "the server could not process this message", code="internal"
                ) from None
            if not isinstance(result, Draft):
                log.error("stage %s returned %r instead of a message", name, type(result))
                raise Rejected("the server could not process this message", code="internal")
            message = result
        return message
