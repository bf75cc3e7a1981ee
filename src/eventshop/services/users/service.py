"""users' composition root: it consumes nothing and publishes user.registered.

Its settings (`UsersSettings`) hold the admin emails and the argon2 cost; its one resource is
the password hasher made with that cost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from eventshop.contracts.users import UserRegistered
from eventshop.platform.service import ServiceContext, ServiceDefinition
from eventshop.platform.settings import PlatformSettings
from eventshop.services import PORTS
from eventshop.services.users import api
from eventshop.services.users.adapters import Argon2Passwords
from eventshop.services.users.settings import UsersSettings


@dataclass
class Resources:
    passwords: Argon2Passwords


@asynccontextmanager
async def open_resources(
    settings: UsersSettings, platform: PlatformSettings
) -> AsyncIterator[Resources]:
    """The hasher at the configured cost (it holds no connection: nothing to close)."""
    yield Resources(
        passwords=Argon2Passwords(
            time_cost=settings.password_time_cost,
            memory_kib=settings.password_memory_kib,
            parallelism=settings.password_parallelism,
        )
    )


Context = ServiceContext[UsersSettings, Resources]

definition: ServiceDefinition[UsersSettings, Resources] = ServiceDefinition(
    name="users",
    port=PORTS["users"],
    publishes=[UserRegistered],
    migrations=["eventshop.services.users.migrations"],
    router=api.router,
    settings=UsersSettings,
    resources=open_resources,
)
