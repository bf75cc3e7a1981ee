"""payments' composition root: what it consumes, what it publishes, how it is built."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

from eventshop.platform.runtime import ServiceContext, ServiceDefinition
from eventshop.services import PORTS
from eventshop.services.payments import api, handlers
from eventshop.services.payments.adapters import SimulatedProvider
from eventshop.services.payments.settings import PaymentsSettings
from eventshop.services.payments.worker import ChargeWorker

#: read from the environment when the service is loaded, so a bad value stops it at start
settings = PaymentsSettings()


async def start_charge_worker(ctx: ServiceContext) -> Callable[[], Awaitable[None]]:
    provider = SimulatedProvider(
        latency_ms=settings.provider_latency_ms,
        slow_latency_ms=settings.slow_latency_ms,
        decline_rate=settings.decline_rate,
    )
    return ChargeWorker(ctx.pool, provider, settings, service=ctx.name).start()


definition = ServiceDefinition(
    name="payments",
    port=PORTS["payments"],
    handlers={
        "payment.requested": partial(handlers.take_payment_request, rules=settings.fraud_rules()),
        "order.cancelled": handlers.cancel_payment,
    },
    publishes=["payment.succeeded", "payment.failed", "payment.refunded"],
    migrations=["eventshop.services.payments.migrations"],
    http=api.build_app,
    on_start=start_charge_worker,
)
