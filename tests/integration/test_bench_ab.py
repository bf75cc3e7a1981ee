"""`bench ab`'s databases, on the real PostgreSQL: each window starts each version anew."""

from __future__ import annotations

import secrets
from pathlib import Path

import asyncpg
import pytest

from eventshop.bench.ab import Version, _database_of, prepare_databases

pytestmark = pytest.mark.integration


async def test_a_window_starts_each_version_on_a_new_database() -> None:
    version = Version("test", secrets.token_hex(20), Path("/nowhere"))
    url = _database_of(version)
    await prepare_databases([version])
    try:
        conn = await asyncpg.connect(url)
        try:  # what a window's runs leave behind
            await conn.execute(
                "CREATE TABLE left_behind (n int); INSERT INTO left_behind VALUES (1)"
            )
        finally:
            await conn.close()

        await prepare_databases([version])  # the next window

        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT to_regclass('left_behind')") is None
        finally:
            await conn.close()
    finally:
        admin = await asyncpg.connect(url.rsplit("/", 1)[0] + "/postgres")
        try:
            name = url.rsplit("/", 1)[1]
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
