"""Final states seen on the broker: the order benchmark's own exclusive, non-durable queue,
bound to the saga's final events, timestamps each order's first final event."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson

from eventshop.bench.orders.config import FINAL_EVENTS


@dataclass
class Final:
    at: float
    event_type: str
    reason: str | None


class FinalWatcher:
    """An exclusive queue of the benchmark's own, bound to the final events of the saga."""

    def __init__(self, amqp_url: str, exchange: str) -> None:
        self.amqp_url = amqp_url
        self.exchange = exchange
        self.finals: dict[str, Final] = {}
        self.duplicates = 0
        self.conflicting = 0
        self.queue_name = ""
        #: why the connection closed under the run (the broker restarted, say); None while open
        self.lost: str | None = None
        self._connection: Any = None

    async def start(self) -> None:
        from eventshop.platform.bus.node import connect

        # the broker, or the first node of the cluster that answers
        self._connection = await connect(self.amqp_url)
        self._connection.close_callbacks.add(self._on_close)
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=1_000)
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True, durable=False)
        self.queue_name = queue.name
        for key in FINAL_EVENTS:
            await queue.bind(self.exchange, routing_key=key)
        await queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: Any) -> None:
        at = time.monotonic()
        try:
            body = orjson.loads(message.body)
            payload = body["payload"]
            order_id = str(payload["order_id"])
            event_type = str(body.get("event_type") or message.routing_key)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        earlier = self.finals.get(order_id)
        if earlier is not None:
            self.duplicates += 1
            if earlier.event_type != event_type:
                self.conflicting += 1
            return
        self.finals[order_id] = Final(at, event_type, payload.get("reason"))

    def _on_close(self, _sender: object, exc: BaseException | None = None) -> None:
        if self.lost is None:
            self.lost = repr(exc) if exc else "closed"

    async def close(self) -> None:
        if self._connection is not None:
            self._connection.close_callbacks.discard(self._on_close)
            await self._connection.close()
