"""`eventshop selfcheck` (cli/selfcheck.py) against the real broker and database, on the test
run's vhost: it passes, and it passes again after a run that left messages in its queues; none
of its events reaches the platform's exchange, where the archive would park every one."""

from __future__ import annotations

import aio_pika

from eventshop.cli.selfcheck import CONSUMER, PRODUCER, run_selfcheck
from eventshop.platform.bus.topology import direct_exchange_of
from eventshop.platform.bus.wire import message_from_envelope
from eventshop.platform.settings import PlatformSettings
from tests.integration.helpers import Bus, ping


def quiet(_: str) -> None:
    pass


async def test_the_selfcheck_passes_and_again_over_what_a_failed_run_left_behind(
    settings: PlatformSettings, bus: Bus
) -> None:
    platform = await bus.tap("#")  # what a "#" subscriber of the platform (the archive) gets
    first = await run_selfcheck(settings, pings=50, say=quiet)
    assert first.ok, first
    assert (first.effects, first.parked, first.pongs_received) == (51, 1, 51)

    # a run that died half way leaves pings in the consumer's queue: not the next run's
    broker = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await broker.channel()
        exchange = await channel.get_exchange(direct_exchange_of(CONSUMER))
        for seq in range(3):  # as its producer sent them: user_id proves who (provenance.py)
            message = message_from_envelope(ping(seq), app_id=PRODUCER)
            message.user_id = "guest"  # the test run's one broker user
            await exchange.publish(message, routing_key=CONSUMER)
    finally:
        await broker.close()

    again = await run_selfcheck(settings, pings=50, say=quiet)
    assert again.ok, again
    assert (again.effects, again.distinct_effects, again.parked) == (51, 51, 1)
    assert platform.messages == []
