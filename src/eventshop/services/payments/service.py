"""payments' composition root: what it consumes, what it publishes, how it is built.

Its settings (`PaymentsSettings`) hold the fraud rules, the simulated provider's behaviour and
the charge job's bounds; its one resource is the payment provider (adapters.py), in-process:
nothing to open or close, nothing that can fail a readiness check. Its one job charges and
refunds (jobs.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from eventshop.contracts.orders import OrderCancelled, PaymentRequested
from eventshop.contracts.payments import PaymentFailed, PaymentRefunded, PaymentSucceeded
from eventshop.platform.service import Batch, ServiceContext, ServiceDefinition
from eventshop.platform.settings import PlatformSettings
from eventshop.services import PORTS
from eventshop.services.payments import api, handlers, jobs
from eventshop.services.payments.adapters import PaymentProvider, SimulatedProvider
from eventshop.services.payments.settings import PaymentsSettings


@dataclass
class Resources:
    provider: PaymentProvider
    #: set once a commit has queued work for the charge job (a payment to charge, a refund):
    #: the job's loop, waiting between polls, claims it at once instead of at the next poll.
    #: In-process: with replicas, work queued by a process that does not run the job waits
    #: for the job's poll (`charge_poll_s`) as before.
    work_queued: asyncio.Event = field(default_factory=asyncio.Event)


@asynccontextmanager
async def open_resources(
    settings: PaymentsSettings, platform: PlatformSettings
) -> AsyncIterator[Resources]:
    """The simulated provider its settings describe (latency, random declines)."""
    yield Resources(
        provider=SimulatedProvider(
            latency_ms=settings.provider_latency_ms,
            slow_latency_ms=settings.slow_latency_ms,
            decline_rate=settings.decline_rate,
        )
    )


Context = ServiceContext[PaymentsSettings, Resources]

definition: ServiceDefinition[PaymentsSettings, Resources] = ServiceDefinition(
    name="payments",
    port=PORTS["payments"],
    handlers={
        PaymentRequested: Batch(handlers.screen_payments),
        OrderCancelled: handlers.cancel_payment,
    },
    publishes=[PaymentSucceeded, PaymentFailed, PaymentRefunded],
    migrations=["eventshop.services.payments.migrations"],
    router=api.router,
    settings=PaymentsSettings,
    resources=open_resources,
    jobs=[jobs.charge_payments],
    # replicas take the same users' velocity locks: a window's are taken first, in one order
    lock_first=handlers.lock_window,
)
