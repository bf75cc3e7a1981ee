"""One service's attachment to the bus: a robust connection, a publisher, the outbox relay and
(when it consumes anything) its consumer. The runtime builds one per service process."""

from __future__ import annotations

import asyncio
import contextlib

import aio_pika
import asyncpg
from aio_pika.abc import AbstractRobustConnection

from eventshop.contracts import Registry
from eventshop.platform.bus.consumer import Consumer
from eventshop.platform.bus.provenance import Provenance
from eventshop.platform.bus.publisher import Publisher, user_of
from eventshop.platform.bus.relay import OutboxRelay
from eventshop.platform.bus.topology import direct_exchange_of
from eventshop.platform.bus.types import Subscription
from eventshop.platform.observability.logging import get_logger
from eventshop.platform.settings import PlatformSettings

log = get_logger(__name__)


class BusNode:
    def __init__(
        self,
        *,
        service: str,
        schema: str,
        pool: asyncpg.Pool,
        registry: Registry,
        settings: PlatformSettings,
        subscription: Subscription | None = None,
    ) -> None:
        self.service = service
        self.schema = schema
        self.pool = pool
        self.registry = registry
        self.settings = settings
        self.subscription = subscription
        self.connection: AbstractRobustConnection | None = None
        self.publisher: Publisher | None = None
        self.relay: OutboxRelay | None = None
        self.consumer: Consumer | None = None
        self._relay_task: asyncio.Task[None] | None = None

    async def start(self, *, consume: bool = True) -> None:
        s = self.settings
        self.connection = await aio_pika.connect_robust(
            s.amqp_url, client_properties={"connection_name": f"eventshop-{self.service}"}
        )
        self.publisher = Publisher(
            self.connection,
            s.exchange,
            confirm_timeout_s=s.confirm_timeout_s,
            direct=direct_exchange_of(self.service),
        )
        await self.publisher.start()
        self.relay = OutboxRelay(
            self.pool,
            self.publisher,
            dsn=s.database_url,
            schema=self.schema,
            app_id=self.service,
            batch=s.relay_batch,
            poll_s=s.relay_poll_s,
        )
        self._relay_task = asyncio.create_task(self.relay.run(), name=f"relay:{self.service}")
        if self.subscription is not None and consume:
            self.consumer = Consumer(
                self.subscription,
                connection=self.connection,
                pool=self.pool,
                publisher=self.publisher,
                registry=self.registry,
                exchange=s.exchange,
                # the user RabbitMQ knows this connection as, stamped on all it publishes
                provenance=Provenance(user_of(self.connection), s.broker_identity),
                prefetch=s.prefetch,
                handler_timeout_s=s.handler_timeout_s,
            )
            await self.consumer.start()

    async def stop(self) -> None:
        """Graceful: stop consuming, finish the batch in hand, flush the outbox, disconnect."""
        if self.consumer is not None:
            await self.consumer.stop()
        if self.relay is not None:
            with contextlib.suppress(Exception):
                sent = await self.relay.flush()
                if sent:
                    log.info("relay.flushed", sent=sent)
            self.relay.stop()
        if self._relay_task is not None:
            try:
                await asyncio.wait_for(self._relay_task, 5)
            except (TimeoutError, asyncio.CancelledError):
                self._relay_task.cancel()
        if self.publisher is not None:
            with contextlib.suppress(Exception):
                await self.publisher.close()
        if self.connection is not None:
            with contextlib.suppress(Exception):
                await self.connection.close()
