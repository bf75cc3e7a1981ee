"""One service's attachment to the bus: a robust connection, a publisher, the outbox relay and
(when it consumes anything) its consumer. The runtime builds one per service process.

The broker may be a cluster: EVENTSHOP_AMQP_URL then lists every node's URL, comma-separated
(`broker_urls`). aio-pika's robust connection takes one URL, and aiormq opens its socket through
a transport factory it lets us give: `FirstAnsweringTransport` tries the nodes in turn, starting
after the one it last reached, so the first connection goes to the first node that answers and a
lost one is re-made, by aio-pika's own reconnection, on any live node; aio-pika then re-opens
the channels (ADR 0013), and the consumer consumes again on its own (ADR 0017).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import aio_pika
import aiormq
import asyncpg
from aio_pika.abc import AbstractConnection, AbstractRobustConnection
from aiormq.connection import TCPTransportFactory, TLSTransportFactory, TransportFactory
from pamqp.common import FieldTable
from yarl import URL

from eventshop.contracts import Registry
from eventshop.platform.bus import codec
from eventshop.platform.bus.consumer import Consumer
from eventshop.platform.bus.provenance import Provenance
from eventshop.platform.bus.publisher import Publisher, user_of
from eventshop.platform.bus.relay import OutboxRelay
from eventshop.platform.bus.topology import direct_exchange_of
from eventshop.platform.bus.types import Subscription
from eventshop.platform.observability.logging import get_logger
from eventshop.platform.reach import AMQP_CLIENT_LOGGERS, once_reachable
from eventshop.platform.settings import PlatformSettings, broker_urls

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

    async def start(self, *, consume: bool = True, wait_for_broker_s: float = 0.0) -> None:
        """Connect, declare, start the relay (and the consumer). A broker not reachable yet is
        waited for up to `wait_for_broker_s` (a service starting with the whole deployment,
        platform/reach.py); 0, the tools' and the tests' default: it fails at once."""
        s = self.settings
        self.connection = await once_reachable(
            "broker",
            lambda: connect_robust(s.amqp_url, name=f"eventshop-{self.service}"),
            within_s=wait_for_broker_s,
            quiet=AMQP_CLIENT_LOGGERS,
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
            keep_sent=s.retention_outbox_sent_s > 0,
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


class FirstAnsweringTransport(TransportFactory):
    """aiormq's socket for a connection to one of several brokers (a cluster's nodes): each
    attempt tries them in turn, beginning with the one after the node it reached last time
    (which a reconnection has just lost), and uses the first that accepts the connection."""

    def __init__(self, urls: Sequence[URL]) -> None:
        self.addresses = [(u.host or "127.0.0.1", u.port or 5672) for u in urls]
        self._inner: TransportFactory = (
            TLSTransportFactory() if urls[0].scheme == "amqps" else TCPTransportFactory()
        )
        self._next = 0
        self.current: tuple[str, int] | None = None

    async def create(
        self, url: URL, **kwargs: Any
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        errors: list[str] = []
        n = len(self.addresses)
        for i in range(n):
            index = (self._next + i) % n
            host, port = self.addresses[index]
            try:
                # a copy of kwargs per try: the TCP factory pops from it
                stream = await self._inner.create(url.with_host(host).with_port(port), **kwargs)
            except (aiormq.exceptions.AMQPConnectionError, OSError) as exc:
                errors.append(f"{host}:{port}: {exc!r}")
                continue
            self._next = (index + 1) % n  # the next attempt starts after this one
            self.current = (host, port)
            log.info("bus.connected", broker=f"{host}:{port}")
            return stream
        raise aiormq.exceptions.AMQPConnectionError("no broker answered: " + "; ".join(errors))


class ClusterRobustConnection(aio_pika.RobustConnection):
    """aio-pika's robust connection, its every (re)connection made by `FirstAnsweringTransport`."""

    def __init__(self, url: URL, *, urls: Sequence[URL], **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.transport_factory = FirstAnsweringTransport(urls)
        # handed to aiormq.Connection by every connect (aio-pika passes its kwargs through)
        self.kwargs["transport_factory"] = self.transport_factory


async def connect_robust(amqp_url: str, *, name: str) -> AbstractRobustConnection:
    """A robust connection to the broker, or to the first node of a cluster that answers."""
    codec.install()
    urls = [URL(u) for u in broker_urls(amqp_url)]
    properties: FieldTable = {"connection_name": name}
    if len(urls) == 1:
        return await aio_pika.connect_robust(str(urls[0]), client_properties=properties)
    # a failed attempt has tried every node already: try them all again a second later, not
    # aio-pika's 5 s (the quorum queues elect a new leader in a few seconds)
    connection = ClusterRobustConnection(
        urls[0], urls=urls, client_properties=properties, reconnect_interval=1
    )
    await connection.connect()
    return connection


async def connect(amqp_url: str) -> AbstractConnection:
    """A plain connection (an operator's tool): to the broker, or to the first node of a
    cluster that answers."""
    codec.install()
    urls = broker_urls(amqp_url)
    for url in urls[:-1]:
        with contextlib.suppress(aiormq.exceptions.AMQPConnectionError, OSError):
            return await aio_pika.connect(url)
    return await aio_pika.connect(urls[-1])
