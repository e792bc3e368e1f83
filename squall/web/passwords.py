"""Password hashes: argon2id (argon2-cffi), computed off the event loop.

One hash costs about 64 MiB and tens to hundreds of milliseconds of CPU on
purpose (argon2-cffi's defaults, RFC 9106's low-memory profile). Hashing on the
loop would stall every connection of the node, so it runs in a pool of
:data:`HASH_THREADS` threads: that bounds the memory and the cores that sign-ins
can take; more sign-ins at once wait their turn.

An unknown nick is verified against a dummy hash of the same parameters, so
the time of a refusal does not tell whether the account exists.
"""

from __future__ import annotations

import asyncio
import secrets
from concurrent.futures import ThreadPoolExecutor

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = ["Passwords", "HASH_THREADS"]

# Hashes computed at once on a node; each holds 64 MiB while it runs.
HASH_THREADS = 2


class Passwords:
    """Hashes and verifies passwords in a small thread pool. Call :meth:`close` at shutdown."""

    def __init__(self, *, threads: int = HASH_THREADS) -> None:
        self.hasher = PasswordHasher()  # argon2id, t=3, m=64 MiB, p=4
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="squall-argon2")
        self._dummy: str | None = None

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches; a None hash (no account) is never a match,
        but costs the same time as a wrong password."""
        if password_hash is None:
            dummy = await self._dummy_hash()  # its password is random and forgotten
            await asyncio.get_running_loop().run_in_executor(self._pool, self._check, dummy, password)
            return False
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._check, password_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with weaker parameters than ours."""
        try:
            return self.hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return False

    def _check(self, password_hash: str, password: str) -> bool:
        try:
            return self.hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    async def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = await self.hash(secrets.token_urlsafe(16))
        return self._dummy

    def close(self) -> None:
        self._pool.shutdown(wait=False)
