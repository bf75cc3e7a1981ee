"""`eventshop bench bus`'s outbox phase, small, on the real broker and database: every event
reaches its effect once, whether the relay keeps its sent rows or deletes them as confirmed,
and the run's checks count both ways (nothing lost, nothing twice)."""

from __future__ import annotations

import aio_pika
import psutil
import pytest

from eventshop.bench.bus.config import BenchConfig
from eventshop.bench.bus.phases import run_bench
from eventshop.bench.bus.protocol import Child
from eventshop.platform.settings import PlatformSettings

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("kept_s", [3_600.0, 0.0], ids=["sent-rows-kept", "sent-rows-deleted"])
async def test_every_event_takes_effect_once_through_outbox_relay_and_inbox(
    settings: PlatformSettings, kept_s: float
) -> None:
    cfg = BenchConfig(
        settings=settings.model_copy(update={"retention_outbox_sent_s": kept_s}),
        events=500,
        raw_messages=500,
        raw=False,
        prefetch=100,
    )
    report = await run_bench(cfg, say=lambda _: None)
    details = report["details"]
    assert (report["lost"], report["duplicate_effects"]) == (0, 0)
    assert details["committed"] == details["effect_rows"] == details["inbox_rows"] == 500
    assert details["published"] == 500 and details["unsent"] == 0
    assert details["sent_rows"] == ("kept" if kept_s else "deleted")
    assert details["outbox_rows_left"] == (500 if kept_s else 0)
    # nothing of the run is left on the broker: its exchanges are gone (the queues were already)
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        for name in (cfg.exchange, f"{cfg.producer}.direct", f"{cfg.consumer}.direct"):
            channel = await connection.channel()
            with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
                await channel.get_exchange(name, ensure=True)
    finally:
        await connection.close()


async def test_rounds_alternate_raw_and_outbox_and_report_their_medians(
    settings: PlatformSettings,
) -> None:
    cfg = BenchConfig(settings=settings, events=300, raw_messages=300, prefetch=100, rounds=2)
    said: list[str] = []
    report = await run_bench(cfg, say=said.append)
    rounds = report["rounds"]
    assert len(rounds) == 2 and (report["lost"], report["duplicate_effects"]) == (0, 0)
    ratios = sorted(r["ratio_to_raw_e2e"] for r in rounds)
    assert all(r > 0 for r in ratios)
    assert report["ratio_to_raw_e2e"] == pytest.approx(sum(ratios) / 2, abs=1e-3)
    # round 1 measures raw aio-pika first, round 2 the outbox first
    first, second = said.index("round 1 of 2"), said.index("round 2 of 2")
    assert said[first + 1].startswith("raw aio-pika") and said[second + 1].startswith("outbox")


async def test_a_child_gets_its_passwords_on_stdin_never_on_its_command_line(
    settings: PlatformSettings,
) -> None:
    """The configuration carries the broker's URL with its password: a command line is
    readable by every user of the machine (`ps`, /proc/<pid>/cmdline), stdin is not."""
    password = settings.amqp_url.split("@", 1)[0].rsplit(":", 1)[1]
    assert len(password) >= 5  # a password to look for, not a word found anywhere
    cfg = BenchConfig(settings=settings, events=10, raw_messages=10)
    child = await Child.start(
        "raw-publish", cfg.child(queue=cfg.raw_queue, count=10, size=300, window=10)
    )
    try:
        await child.ready(timeout_s=60)  # it read the configuration and connected with it
        cmdline = psutil.Process(child.pid).cmdline()
        assert "raw-publish" in cmdline
        assert not any(password in arg for arg in cmdline)
    finally:
        child.kill()
        await child.proc.wait()
