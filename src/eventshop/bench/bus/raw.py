"""The raw client's child processes: aio-pika alone, no database, no platform code.

`raw_publish` publishes `count` persistent messages to one queue, `raw_consume` drains them;
their rates are the yardstick the platform's end-to-end rate is compared with.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from typing import Any

from eventshop.bench.bus.protocol import say, wait_for


async def raw_publish(cfg: Mapping[str, Any]) -> None:
    """aio-pika as its users drive it at speed, with up to `window` publishes unconfirmed.

    "gather": a window of publishes gathered, then the next; "sliding": a task per publish,
    the next started as soon as a confirm frees a slot.
    """
    import aio_pika

    connection = await aio_pika.connect(cfg["amqp_url"])
    channel = await connection.channel(publisher_confirms=True)
    exchange = channel.default_exchange
    body = os.urandom(cfg["size"] // 2).hex().encode()[: cfg["size"]]
    queue, count, window = cfg["queue"], cfg["count"], cfg["window"]
    failed = 0

    def publish() -> Any:
        message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        return exchange.publish(message, routing_key=queue)

    say({"ready": True})
    await wait_for("go")
    start = time.monotonic()
    if cfg.get("publish_mode", "gather") == "gather":
        for first in range(0, count, window):
            results = await asyncio.gather(
                *(publish() for _ in range(min(window, count - first))), return_exceptions=True
            )
            failed += sum(isinstance(r, BaseException) for r in results)
    else:
        slots = asyncio.Semaphore(window)
        pending: set[asyncio.Task[Any]] = set()

        def done(task: asyncio.Task[Any]) -> None:
            nonlocal failed
            pending.discard(task)
            slots.release()
            if task.cancelled() or task.exception() is not None:
                failed += 1

        for _ in range(count):
            await slots.acquire()
            task = asyncio.ensure_future(publish())
            pending.add(task)
            task.add_done_callback(done)
        while pending:
            await asyncio.wait(list(pending))
    end = time.monotonic()
    say({"start": start, "end": end, "failed": failed})
    await wait_for("stop")
    await connection.close()


async def raw_consume(cfg: Mapping[str, Any]) -> None:
    import aio_pika
    from aio_pika.abc import AbstractIncomingMessage

    connection = await aio_pika.connect(cfg["amqp_url"])
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=cfg["prefetch"])
    queue = await channel.get_queue(cfg["queue"], ensure=False)
    count, ack_every = cfg["count"], cfg["ack_every"]
    finished = asyncio.Event()
    received = 0
    end = 0.0

    async def on_message(message: AbstractIncomingMessage) -> None:
        nonlocal received, end
        received += 1
        if received % ack_every == 0 or received == count:
            await message.ack(multiple=True)
        if received == count:
            end = time.monotonic()
            finished.set()

    say({"ready": True})
    await wait_for("go")
    start = time.monotonic()
    await queue.consume(on_message)
    await finished.wait()
    say({"start": start, "end": end, "received": received})
    await wait_for("stop")
    await connection.close()
