"""users' adapters: password hashing with argon2id, off the event loop.

Hashing and verifying deliberately cost tens of milliseconds of CPU; run on the loop they would
stall every other request, so each runs in a worker thread (`asyncio.to_thread`).
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError


class Argon2Passwords:
    def __init__(self, *, time_cost: int, memory_kib: int, parallelism: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism
        )
        self._decoy: str | None = None

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        return await asyncio.to_thread(self._matches, password_hash, password)

    async def verify_nobody(self, password: str) -> None:
        """Spend the time of a real verification when the email is unknown.

        Without it a login for an unknown email answers measurably faster than one with a wrong
        password, which tells an attacker which emails have accounts.
        """
        if self._decoy is None:
            self._decoy = await self.hash("decoy password, never matched")
        await self.verify(self._decoy, password)

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether the hash was made with other parameters than the current ones."""
        return self._hasher.check_needs_rehash(password_hash)

    def _matches(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False
